"""After ``dvc pull``: tell Snakemake what DVC's lock file knows about the pulled outputs.

Snakemake decides by modification times (and by the params and code it recorded when it ran a
job). Files that ``dvc pull`` restores all get the time of the pull, in no useful order, and a
fresh clone has no Snakemake records at all, so Snakemake would retrain models that exist and
could trust ones that belong to other parameters. DVC, though, records for every stage the hash of
each input, code file and parameter its outputs were made from (dvc.lock), and ``dvc status``
compares that record with the checkout:

- a stage that matches dvc.lock: its outputs belong to the current code, data and parameters.
  They are marked up to date for Snakemake with ``snakemake --touch --forceall``, which touches
  them in the DAG's order (each output newer than its inputs) and records the current params and
  code, so a later parameter change reruns exactly the jobs it affects.
- a stage whose code, parameters or inputs changed since dvc.lock: its outputs are out of date.
  They are removed (they stay in DVC's cache: ``dvc checkout <stage>`` brings them back), so
  Snakemake rebuilds them and everything after them. Never marked up to date.
- a stage whose outputs differ from dvc.lock (changed by hand, or made here and never recorded
  with ``dvc commit``): nothing is removed or marked, and the command fails, naming them.
"""

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LOCAL_CHANGES = ("modified", "new")


@dataclass
class SyncPlan:
    clean: list[str] = field(default_factory=list)  # match dvc.lock: marked up to date
    stale: dict[str, list] = field(default_factory=dict)  # inputs/code/params changed: outputs removed
    unrecorded: dict[str, list] = field(default_factory=dict)  # outputs differ from dvc.lock: refuse


def read_stages(root: Path) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def dvc_status(root: Path) -> dict[str, list]:
    """``dvc status --json``: {stage: [changes]} for every stage that does not match dvc.lock."""
    proc = subprocess.run(["dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed:\n{proc.stdout}{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    status = json.loads(lines[-1]) if lines else {}
    return {name.split(":")[-1]: changes for name, changes in status.items()}


def plan_sync(stages: dict[str, dict], status: dict[str, list], locked: set[str]) -> SyncPlan:
    """Sort stages by what dvc status says about them (pure: no file is touched)."""
    result = SyncPlan()
    for name in stages:
        changes = status.get(name, [])
        if name not in locked:
            result.unrecorded[name] = ["not recorded in dvc.lock"]
            continue
        outs = {path: what for change in changes if isinstance(change, dict)
                for path, what in change.get("changed outs", {}).items()}
        local = {path: what for path, what in outs.items() if what in LOCAL_CHANGES}
        if local:
            result.unrecorded[name] = [f"{path}: {what}" for path, what in local.items()]
        elif any(not (isinstance(c, dict) and set(c) == {"changed outs"}) for c in changes):
            result.stale[name] = changes  # deps, params or the command changed
        else:
            result.clean.append(name)  # nothing changed, or only outputs missing (Snakemake makes them)
    return result


def out_paths(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def snakemake_args(stage: dict) -> list[str]:
    """The configfile arguments of a stage's command (everything after the first --configfile)."""
    words = stage["cmd"].split()
    return words[words.index("--configfile"):] if "--configfile" in words else []


def sync(root: Path, *, status: dict[str, list] | None = None) -> SyncPlan:
    root = Path(root)
    stages = read_stages(root)
    lock_file = root / "dvc.lock"
    locked = set(yaml.safe_load(lock_file.read_text())["stages"]) if lock_file.exists() else set()
    result = plan_sync(stages, dvc_status(root) if status is None else status, locked)
    if result.unrecorded:
        lines = "\n".join(f"  {name}: {', '.join(map(str, why))}" for name, why in result.unrecorded.items())
        raise SystemExit(
            "kdpipe dvc-sync: these stages' outputs are not what dvc.lock records, so DVC cannot say what "
            f"they were made from:\n{lines}\nRecord them (`dvc commit <stage>`) or restore them "
            "(`dvc checkout <stage>`), then run `kdpipe dvc-sync` again. Nothing was changed.")
    targets = [t for stage in stages.values() for t in stage["meta"]["snakemake_targets"]]
    configfiles = snakemake_args(next(iter(stages.values())))
    # Touch in DAG order and record params and code: every existing output is now up to date for Snakemake.
    proc = subprocess.run(["snakemake", *targets, "--touch", "--forceall", "--cores", "1", "--quiet", "all",
                           *configfiles], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake --touch failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    for name in result.stale:
        for path in map(root.joinpath, out_paths(stages[name])):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    return result


def describe(result: SyncPlan) -> str:
    lines = [f"up to date (match dvc.lock), marked for Snakemake: {', '.join(result.clean) or 'none'}"]
    for name, changes in result.stale.items():
        lines.append(f"out of date, outputs removed so Snakemake rebuilds them (`dvc checkout {name}` restores): "
                     f"{name}: {json.dumps(changes)}")
    return "\n".join(lines)
