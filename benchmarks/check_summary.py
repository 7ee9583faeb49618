"""The GPU check's JSON summary (``$OUT/gpu_check.json``), rewritten atomically after each measurement.

A run cut off by ``timeout`` (or a lost machine) keeps everything measured before: each writer
reads the file, adds its entry and replaces the file in one rename. Used three ways:

* from Python: ``update(path, "gpu_throughput", "rows", "resnet20", value=row)``;
* from benchmarks/gpu_check.sh: ``python benchmarks/check_summary.py env PATH`` (commit, torch,
  GPU) and ``... step PATH NAME EXIT_CODE SECONDS LIMIT`` after each step;
* as a pytest plugin (``-p check_summary``, with KDPIPE_GPU_CHECK_SUMMARY=PATH): each test's
  outcome as soon as it is known.

The steps run one after another, so one writer at a time.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SUMMARY_ENV = "KDPIPE_GPU_CHECK_SUMMARY"


def read(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def write(path, summary: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def update(path, *keys: str, value) -> None:
    """Set summary[k1][k2]...[kn] = value (missing levels created) and rewrite the file."""
    if path is None:
        return
    summary = read(path)
    node = summary
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    write(path, summary)


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"


def environment(root: Path) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"git_commit": git_commit(root), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "python": sys.version.split()[0], "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dry_run": os.environ.get("KDPIPE_GPU_CHECK_DRY_RUN") == "1"}


# pytest plugin: `python -m pytest -p check_summary` with benchmarks/ on the path
def pytest_runtest_logreport(report):
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed") or \
            (report.when == "teardown" and report.outcome == "failed"):
        entry = {"outcome": report.outcome, "seconds": round(report.duration, 3)}
        if report.skipped and isinstance(report.longrepr, tuple):
            entry["reason"] = report.longrepr[2]
        elif report.failed:
            entry["error"] = str(report.longrepr)[-1500:]
        update(path, "pytest", "tests", f"{report.nodeid} ({report.when})" if report.when != "call" else report.nodeid,
               value=entry)


def main(argv: list[str]) -> int:
    what, path = argv[0], argv[1]
    if what == "env":
        update(path, "environment", value=environment(Path(__file__).resolve().parents[1]))
        print(json.dumps(read(path)["environment"]))
    elif what == "step":
        name, rc, seconds, limit = argv[2], int(argv[3]), int(argv[4]), int(argv[5])
        status = "passed" if rc == 0 else "timed out" if rc in (124, 137) else "failed"
        update(path, "steps", name, value={"exit": rc, "status": status, "seconds": seconds, "limit_s": limit})
    else:
        raise SystemExit(f"check_summary: unknown command {what!r} (env | step)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
