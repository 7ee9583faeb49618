"""Data errors say what to do: the file or URL, the likely cause, and nothing half-written left behind.

Truncated archives, HTTP 404s, an HTML page saved instead of an archive, the wrong archive, no
network, an archive placed by hand (checked like a download), and a model.pt that torch refuses.
The `kdpipe` command prints these as `kdpipe: <message>`, without a traceback.
"""

import hashlib
import http.server
import shutil
import socket
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import torch
import yaml

from kdpipe.data.archive import ArchiveError, fetch, safe_extract, verify_placed
from kdpipe.data.cifar import prepare_cifar
from kdpipe.data.cityscapes import prepare_official, prepare_pix2pix
from kdpipe.errors import ModelFileError
from kdpipe.training.classify import load_model_file
from test_cifar import make_cifar10
from workflow_copy import copy_workflow, snakemake

HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not here</body></html>\n"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _kdpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kdpipe", *map(str, args)], capture_output=True, text=True, timeout=180)


def _closed_port_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: a connection is refused, as with no network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _prepare_outputs(tmp_path: Path) -> dict:
    return {"train_out": tmp_path / "prepared" / "train.pt", "test_out": tmp_path / "prepared" / "test.pt"}


def _assert_nothing_written(tmp_path: Path, archive: Path) -> None:
    assert not (tmp_path / "prepared").exists() or list((tmp_path / "prepared").iterdir()) == []
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]  # no unpacked leftovers


@pytest.fixture
def cifar10(tmp_path):
    archive, _ = make_cifar10(tmp_path / "build")
    return archive


# ----------------------------------------------------------------------------- archives that cannot be read


def test_truncated_archive_says_damaged_and_names_the_file(tmp_path, cifar10):
    raw = tmp_path / "raw" / "cifar-10-python.tar.gz"
    raw.parent.mkdir()
    raw.write_bytes(cifar10.read_bytes()[: cifar10.stat().st_size // 2])
    with pytest.raises(ArchiveError) as err:
        prepare_cifar("cifar10", raw, **_prepare_outputs(tmp_path))
    message = str(err.value)
    assert str(raw) in message and "damaged or incomplete" in message and "stopped early" in message
    _assert_nothing_written(tmp_path, raw)


def test_html_page_instead_of_an_archive(tmp_path):
    raw = tmp_path / "raw" / "cifar-10-python.tar.gz"
    raw.parent.mkdir()
    raw.write_bytes(HTML)
    with pytest.raises(ArchiveError, match=r"is not an archive: it is an HTML page") as err:
        prepare_cifar("cifar10", raw, **_prepare_outputs(tmp_path))
    assert str(raw) in str(err.value)
    _assert_nothing_written(tmp_path, raw)
    with pytest.raises(ArchiveError, match="HTML page"):
        safe_extract(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_without_test_batch_is_the_wrong_archive(tmp_path):
    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    (src / "batches.meta").write_bytes(b"not read")
    raw = tmp_path / "raw" / "cifar-10-python.tar.gz"
    raw.parent.mkdir()
    with tarfile.open(raw, "w:gz") as tf:
        tf.add(src, arcname="cifar-10-batches-py")
    with pytest.raises(ArchiveError) as err:
        prepare_cifar("cifar10", raw, **_prepare_outputs(tmp_path))
    message = str(err.value)
    assert "wrong archive" in message and "cifar-10-batches-py/test_batch" in message and str(raw) in message
    assert "/.unpacked-" not in message  # names the archive, not a temporary path
    _assert_nothing_written(tmp_path, raw)


def test_official_zip_that_is_an_html_page(tmp_path):
    left, gt = tmp_path / "leftImg8bit_trainvaltest.zip", tmp_path / "gtFine_trainvaltest.zip"
    left.write_bytes(HTML)
    gt.write_bytes(HTML)
    with pytest.raises(ArchiveError, match="leftImg8bit_trainvaltest.zip is not a zip archive: it is an HTML page"):
        prepare_official(left, gt, size=32, **_prepare_outputs(tmp_path))


# ----------------------------------------------------------------------------- downloads


def test_404_names_the_url_and_leaves_nothing(http_server, tmp_path):
    url = http_server.url("cifar-10-python.tar.gz")
    dest = tmp_path / "raw" / "c10" / "cifar-10-python.tar.gz"
    with pytest.raises(ArchiveError) as err:
        fetch(url, dest, md5="0" * 32)
    message = str(err.value)
    assert url in message and "HTTP 404" in message and str(dest) in message and "0" * 32 in message
    assert list(dest.parent.iterdir()) == []


def test_html_page_served_instead_of_the_archive(http_server, tmp_path, cifar10):
    (http_server.root / "cifar-10-python.tar.gz").write_bytes(HTML)
    url = http_server.url("cifar-10-python.tar.gz")
    dest = tmp_path / "raw" / "cifar-10-python.tar.gz"
    with pytest.raises(ArchiveError) as err:
        fetch(url, dest, md5=_md5(cifar10))
    message = str(err.value)
    assert url in message and "md5 mismatch" in message and "HTML page" in message and "discarded" in message
    assert list(dest.parent.iterdir()) == []


class _ShortBody(http.server.BaseHTTPRequestHandler):
    """Promises 100,000 bytes and sends 10: a connection that drops half-way."""

    def do_GET(self):  # noqa: N802 - the base class's name
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"x" * 8)
        self.wfile.flush()

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_download_that_stops_early(tmp_path, monkeypatch):
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortBody)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
        dest = tmp_path / "raw" / "cifar-10-python.tar.gz"
        with pytest.raises(ArchiveError) as err:
            fetch(url, dest, md5="0" * 32)
    finally:
        server.shutdown()
        server.server_close()
    # urllib does not notice the missing bytes; the checksum does, and says what the file looks like.
    message = str(err.value)
    assert url in message and "md5 mismatch" in message and "incomplete (a download that stopped early?)" in message
    assert list(dest.parent.iterdir()) == []


def test_truncated_download_is_never_trusted_on_first_use(http_server, tmp_path, cifar10):
    # The first member still reads: only the whole stream shows the archive is cut short.
    (http_server.root / "cityscapes.tar.gz").write_bytes(cifar10.read_bytes()[: cifar10.stat().st_size * 2 // 3])
    raw = tmp_path / "raw"
    with pytest.raises(ArchiveError, match=r"did not return an archive \(damaged or incomplete"):
        fetch(http_server.url("cityscapes.tar.gz"), raw / "cityscapes.tar.gz", record_sha256=raw / "cityscapes.tar.gz.sha256")
    assert list(raw.iterdir()) == []


def test_no_network_says_where_to_place_the_file_and_its_checksum(tmp_path):
    url = _closed_port_url("cifar-10-python.tar.gz")
    dest = tmp_path / "data" / "raw" / "c10" / "cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    with pytest.raises(ArchiveError) as err:
        fetch(url, dest, md5=md5)
    message = str(err.value)
    assert url in message and "no internet" in message and "compute nodes" in message
    assert f"place the file by hand at {dest}" in message and md5 in message
    assert list(dest.parent.iterdir()) == []


def test_a_url_that_is_not_one(tmp_path):
    with pytest.raises(ArchiveError, match=r"cannot download 'www\.example\.org/c\.tar\.gz'.*`url`"):
        fetch("www.example.org/c.tar.gz", tmp_path / "raw" / "c.tar.gz")  # never leaves the machine
    assert list((tmp_path / "raw").iterdir()) == []


def test_no_network_without_a_published_checksum_names_the_record(tmp_path):
    dest = tmp_path / "raw" / "cityscapes.tar.gz"
    record = tmp_path / "raw" / "cityscapes.tar.gz.sha256"
    with pytest.raises(ArchiveError) as err:
        fetch(_closed_port_url("cityscapes.tar.gz"), dest, record_sha256=record)
    assert f"sha256 will be recorded in {record}" in str(err.value)
    assert not record.exists()


def test_the_command_prints_the_message_without_a_traceback(tmp_path, cifar10):
    url = _closed_port_url("cifar-10-python.tar.gz")
    proc = _kdpipe("download", "--url", url, "--md5", "0" * 32, "--out", tmp_path / "raw" / "a.tar.gz")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"kdpipe: cannot download {url}") and "Traceback" not in proc.stderr
    truncated = tmp_path / "raw" / "cifar-10-python.tar.gz"
    truncated.write_bytes(cifar10.read_bytes()[:200])
    proc = _kdpipe("prepare-cifar", "--source", "cifar10", "--archive", truncated, "--train", tmp_path / "tr.pt",
                   "--test", tmp_path / "te.pt")
    assert proc.returncode == 1
    assert proc.stderr.startswith("kdpipe: ") and str(truncated) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "tr.pt").exists()


# ----------------------------------------------------------------------------- archives placed by hand


def test_placed_archive_is_checked_before_it_is_unpacked(tmp_path, cifar10):
    raw = tmp_path / "raw" / "cifar-10-python.tar.gz"
    raw.parent.mkdir()
    shutil.copy(cifar10, raw)
    prepare_cifar("cifar10", raw, md5=_md5(cifar10), **_prepare_outputs(tmp_path))
    assert (tmp_path / "prepared" / "train.pt").exists()

    wrong = "f" * 32
    shutil.rmtree(tmp_path / "prepared")
    with pytest.raises(ArchiveError) as err:
        prepare_cifar("cifar10", raw, md5=wrong, **_prepare_outputs(tmp_path))
    message = str(err.value)
    assert str(raw) in message and wrong in message and _md5(cifar10) in message and "was not used" in message
    _assert_nothing_written(tmp_path, raw)


def test_placed_pix2pix_archive_is_trusted_on_first_use_then_enforced(tmp_path, cifar10):
    raw = tmp_path / "raw" / "cityscapes.tar.gz"
    raw.parent.mkdir()
    shutil.copy(cifar10, raw)  # any real archive: only its checksum matters here
    record = tmp_path / "raw" / "cityscapes.tar.gz.sha256"
    verify_placed(raw, record_sha256=record)
    first = hashlib.sha256(raw.read_bytes()).hexdigest()
    assert record.read_text().strip() == first

    raw.write_bytes(raw.read_bytes() + b"changed")
    with pytest.raises(ArchiveError, match="recorded in") as err:
        prepare_pix2pix(raw, size=32, record_sha256=record, **_prepare_outputs(tmp_path))
    assert first in str(err.value) and str(raw) in str(err.value)
    assert record.read_text().strip() == first
    # A configured sha256 is checked before anything is unpacked, and an HTML page is never recorded.
    with pytest.raises(ArchiveError, match="sha256 mismatch"):
        prepare_pix2pix(raw, size=32, sha256="0" * 64, **_prepare_outputs(tmp_path))
    record.unlink()
    raw.write_bytes(HTML)
    with pytest.raises(ArchiveError, match="is not an archive"):
        verify_placed(raw, record_sha256=record)
    assert not record.exists()


def test_missing_placed_archive_says_what_to_place(tmp_path):
    with pytest.raises(ArchiveError, match=r"does not exist.*md5 must be 0{32}"):
        verify_placed(tmp_path / "raw" / "cifar-10-python.tar.gz", md5="0" * 32)


# ----------------------------------------------------------------------------- model files


class _Touch:
    """A pickle that would create ``path`` when loaded without weights_only."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_model_file_refused_by_weights_only_names_the_file(tmp_path):
    marker = tmp_path / "ran"
    model = tmp_path / "teacher" / "model.pt"
    model.parent.mkdir()
    torch.save({"arch": "resnet8", "num_classes": 10, "state_dict": {}, "extra": _Touch(marker)}, model)
    with pytest.raises(ModelFileError) as err:
        load_model_file(model, torch.device("cpu"))
    message = str(err.value)
    assert str(model) in message and "not written by kdpipe" in message and "damaged" in message
    assert not marker.exists()


def test_damaged_model_file_names_the_file(tmp_path):
    model = tmp_path / "model.pt"
    from kdpipe.models import build_model

    torch.save({"arch": "resnet8", "num_classes": 10, "state_dict": build_model("resnet8", 10).state_dict()}, model)
    load_model_file(model, torch.device("cpu"))  # the real thing loads
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=str(model)):
        load_model_file(model, torch.device("cpu"))


# ----------------------------------------------------------------------------- through Snakemake


def test_no_network_then_an_archive_placed_by_hand(tmp_path, cifar10):
    """The issue's offline run: the download job fails saying what to place where; a wrong file
    placed there is refused by the prepare job, the right one is used."""
    project = copy_workflow(tmp_path / "project")
    overlay = project / "offline.yaml"
    url = _closed_port_url("cifar-10-python.tar.gz")
    overlay.write_text(yaml.safe_dump({"datasets": {"c10": {"source": "cifar10", "url": url, "md5": _md5(cifar10)}}}))
    target = "data/prepared/c10/train.pt"
    raw = project / "data" / "raw" / "c10" / "cifar-10-python.tar.gz"

    def run():
        return snakemake(project, target, "--cores", "1", "--configfile", str(overlay), check=False)

    proc = run()
    assert proc.returncode != 0
    log = (project / "results/logs/download_cifar/c10-cifar-10-python.tar.gz.log").read_text()
    assert log.startswith(f"kdpipe: cannot download {url}") and "Traceback" not in log
    assert "data/raw/c10/cifar-10-python.tar.gz" in log and _md5(cifar10) in log
    assert not raw.parent.exists() or list(raw.parent.iterdir()) == []

    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(HTML)
    proc = run()
    assert proc.returncode != 0
    log = (project / "results/logs/prepare_cifar/c10.log").read_text()
    assert "md5 mismatch for data/raw/c10/cifar-10-python.tar.gz" in log and "HTML page" in log
    assert _md5(cifar10) in log and hashlib.md5(HTML).hexdigest() in log and "Traceback" not in log
    assert not (project / target).exists()

    shutil.copy(cifar10, raw)
    run().check_returncode()
    assert (project / target).exists() and (project / "data/prepared/c10/test.pt").exists()
