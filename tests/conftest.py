"""Shared fixtures."""

import functools
import http.server
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflow_copy import copy_project, git, snakemake

# Session builds: every test that uses one (directly or through a fixture) runs on the worker that built it.
SESSION_BUILDS = ("built_tiny", "built_demo")
# The groups that take minutes, started first (the SLURM module mostly waits on its cluster).
LONG_GROUPS = (*SESSION_BUILDS, "test_slurm")


def _group(item) -> str:
    builds = [name for name in SESSION_BUILDS if name in item.fixturenames]
    return builds[0] if builds else item.module.__name__


def pytest_itemcollected(item):
    """How pytest-xdist (``-n``, ``--dist loadgroup``: pyproject.toml) shares the suite between workers.

    A worker takes a group whole. A module is one group, so a module-scoped fixture (a SLURM cluster,
    a trained run) is made once; the tests that read a session build (built_tiny: DVC, stale results,
    sweeps) are one group, so it is built once. Marked as each test is collected, before any
    pytest_collection_modifyitems: pytest-xdist reads the marks in its own, and the order of that
    hook's implementations differs between pytest releases.
    """
    item.add_marker(pytest.mark.xdist_group(_group(item)))


def pytest_collection_modifyitems(config, items):
    """The long groups go first, then the other modules that run Snakemake builds, then the unit
    tests, which fill the gaps: no long group is left to run alone at the end."""
    pipeline_groups = {_group(item) for item in items if item.get_closest_marker("pipeline")}

    def rank(name):
        if name in LONG_GROUPS:
            return LONG_GROUPS.index(name)
        return len(LONG_GROUPS) + (0 if name in pipeline_groups else 1)

    items.sort(key=lambda item: rank(_group(item)))  # stable: collection order within a rank


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, run where it hands out the tests
def pytest_xdist_node_collection_finished(node, ids):
    """With --dist loadgroup every test's id must carry its group: where it does not, the groups are
    ignored and one module's tests (a SLURM cluster each) run on two workers at once."""
    if node.config.getvalue("dist") == "loadgroup":
        lost = [nodeid for nodeid in ids if "@" not in nodeid.rsplit("]", 1)[-1]]
        if lost:
            pytest.exit(f"pytest-xdist ignores the test groups with pytest {pytest.__version__} (pytest-xdist#1386), "
                        f"e.g. for {lost[0]}: install pytest<9.2 (pip install -e '.[test]'), or run with -n 0",
                        returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown where it is not installed (GPU machines)
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core, at most four (the long groups are three). Not more workers than
    cores: on 2 cores, a third made the suite slower (877 s against 796 s), the builds fighting for them."""
    return max(1, min(os.cpu_count() or 1, 4))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@dataclass(frozen=True)
class LocalServer:
    """A local HTTP server: ``base_url`` (no trailing slash) serves the files under ``root``."""

    base_url: str
    root: Path

    def url(self, name: str = "") -> str:
        return f"{self.base_url}/{name.lstrip('/')}"


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Serve a fresh folder (``http_server.root``) on 127.0.0.1 at a free port for one test.

    Put files under ``http_server.root`` and fetch them from ``http_server.url("name")``.
    """
    root = tmp_path / "served"
    root.mkdir()
    # A proxy configured in the environment must not intercept requests to the local server
    # (subprocesses started by the test inherit this too).
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="http_server", daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield LocalServer(base_url=f"http://{host}:{port}", root=root)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _built(tmp_path_factory, name: str, presets: list[str]) -> Path:
    workdir = copy_project(tmp_path_factory.mktemp(f"built-{name}"))
    git(workdir, "init", "-q")
    git(workdir, "add", "-A")
    git(workdir, "commit", "-qm", name)
    snakemake(workdir, "results/report.pdf", "--cores", "2", "--configfile", *presets, timeout=1500)
    return workdir


@pytest.fixture(scope="session")
def built_demo(tmp_path_factory) -> Path:
    """The project as a fresh clone holds it (a git repository), with the demo preset built whole.

    Built once per session with plain Snakemake; tests that change it work on a copy
    (``workflow_copy.copy_built``).
    """
    return _built(tmp_path_factory, "demo", ["presets/demo.yaml"])


@pytest.fixture(scope="session")
def built_tiny(tmp_path_factory) -> Path:
    """The same with the tiny preset over the demo (every file the demo makes, in about a minute):
    for the plumbing tests (DVC), which check how outputs are recorded, not what was learnt."""
    return _built(tmp_path_factory, "tiny", ["presets/demo.yaml", "presets/tiny.yaml"])
