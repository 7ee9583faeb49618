"""Shared fixtures."""

import functools
import http.server
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflow_copy import copy_project, git, snakemake


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
