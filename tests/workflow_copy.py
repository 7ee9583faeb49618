"""Helpers for tests that run the real Snakemake workflow in a temporary copy of the project."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "config.yaml", "presets", "workflow", "envs", "profiles"]


def copy_workflow(dest: Path) -> Path:
    """Copy what `snakemake` reads into ``dest`` (code comes from the installed kdpipe package)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def copy_project(dest: Path) -> Path:
    """Copy every file git would see (tracked, or new and not ignored) into ``dest``: a clone's content."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def git(workdir: Path, *args: str) -> str:
    """Run git in ``workdir`` with a fixed identity; return its stdout."""
    proc = subprocess.run(["git", "-c", "user.name=kdpipe-tests", "-c", "user.email=tests@kdpipe", *args], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def copy_built(src: Path, dest: Path) -> Path:
    """A copy of a built project, keeping modification times (Snakemake's view of it stays the same)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 900, check: bool = True, env: dict | None = None):
    """Run snakemake in ``workdir``; return the CompletedProcess (stdout and stderr merged)."""
    proc = subprocess.run(
        ["snakemake", *args], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count} (empty when there is nothing to do)."""
    jobs, in_table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] != "total":
                    jobs[parts[0]] = int(parts[1])
            elif parts and not set(line.strip()) <= {"-", " "}:
                break
    return jobs
