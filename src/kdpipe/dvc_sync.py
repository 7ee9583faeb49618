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
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LOCAL_CHANGES = ("modified", "new")
SYNCING_ENV = "KDPIPE_DVC_SYNC"  # set while dvc-sync runs Snakemake itself


def pulled_without_records(root: Path) -> bool:
    """DVC-versioned outputs are here but Snakemake has never recorded a job here (a fresh pull)."""
    root = Path(root)
    if os.environ.get(SYNCING_ENV) or not (root / "dvc.lock").exists():
        return False
    metadata = root / ".snakemake" / "metadata"
    has_records = metadata.is_dir() and any(metadata.iterdir())
    has_outputs = any((root / d).is_dir() and any((root / d).iterdir()) for d in ("data/prepared", "results"))
    return has_outputs and not has_records


@dataclass
class SyncPlan:
    clean: list[str] = field(default_factory=list)  # match dvc.lock: marked up to date
    missing: dict[str, list] = field(default_factory=dict)  # match, but some outputs absent: Snakemake makes them
    stale: dict[str, list] = field(default_factory=dict)  # inputs/code/params changed, or after such a stage
    unrecorded: dict[str, list] = field(default_factory=dict)  # outputs differ from dvc.lock: refuse


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def downstream(stages: dict[str, dict]) -> dict[str, set[str]]:
    """For each stage, the stages that read its outputs, directly or through others."""
    direct = {a: {b for b, sb in stages.items() if b != a and any(_under(d, out_paths(sa)) for d in sb.get("deps", []))}
              for a, sa in stages.items()}
    closure = {}
    for name in stages:
        seen, todo = set(), list(direct[name])
        while todo:
            b = todo.pop()
            if b not in seen:
                seen.add(b)
                todo.extend(direct[b])
        closure[name] = seen
    return closure


def _changed_inputs(changes: list) -> list:
    """The changes that make outputs out of date: a dependency's content, a parameter, the command.

    A dependency reported as "deleted" is an upstream output that is absent here (not pulled, or
    refused as corrupt); the lock still says what it was, so it does not make this stage stale.
    """
    found = []
    for change in changes:
        if not isinstance(change, dict):
            found.append(change)  # e.g. "always changed"
            continue
        for kind, what in change.items():
            if kind == "changed outs":
                continue
            if kind == "changed deps" and isinstance(what, dict):
                real = {k: v for k, v in what.items() if v != "deleted"}
                if real:
                    found.append({kind: real})
            else:
                found.append({kind: what})
    return found


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
        elif inputs := _changed_inputs(changes):
            result.stale[name] = inputs
        elif outs:
            result.missing[name] = [f"{path}: {what}" for path, what in outs.items()]
        else:
            result.clean.append(name)
    # A stage after a stale one was made from outputs that are about to be rebuilt: stale too.
    after = downstream(stages)
    for name in list(result.stale):
        for later in sorted(after[name]):
            if later not in result.stale and later not in result.unrecorded:
                result.stale[later] = [f"after {name}"]
                result.missing.pop(later, None)
                if later in result.clean:
                    result.clean.remove(later)
    return result


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
                           *configfiles], cwd=root, capture_output=True, text=True,
                          env={**os.environ, SYNCING_ENV: "1"})
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
    for name, what in result.missing.items():
        lines.append(f"up to date but incomplete here, Snakemake makes what is missing when asked: {name}: "
                     f"{', '.join(what)}")
    for name, changes in result.stale.items():
        lines.append(f"out of date, outputs removed so Snakemake rebuilds them (`dvc checkout {name}` restores): "
                     f"{name}: {json.dumps(changes)}")
    return "\n".join(lines)
