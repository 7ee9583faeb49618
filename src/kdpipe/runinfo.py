"""Facts about where and from what a run was made: recorded in every metrics.json."""

import os
import socket
import subprocess


def git_commit() -> str:
    """The commit of the working tree, with ``-dirty`` when tracked files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def host_facts() -> dict:
    facts = {"host": socket.gethostname()}
    if "SLURM_JOB_ID" in os.environ:
        facts["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return facts
