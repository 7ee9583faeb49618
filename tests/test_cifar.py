"""kdpipe.data.cifar: tiny archives in the real CIFAR "python version" layout, end to end."""

import hashlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdpipe.data.archive import ArchiveError, fetch
from kdpipe.data.cifar import prepare_cifar
from kdpipe.data.prepared import load_split

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = [f"fine_{i:02d}" for i in range(100)]
CIFAR100_COARSE = [f"coarse_{i:02d}" for i in range(20)]


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official archives: byte strings as BINSTRING."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def _dump_py2(path: Path, obj) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # Python 2 era numpy lived at numpy.core, not numpy._core.
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def _batch(rng: np.random.RandomState, n: int, num_classes: int, name: bytes) -> tuple[dict, np.ndarray, np.ndarray]:
    data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
    labels = rng.randint(0, num_classes, size=n)
    return data, labels, {b"batch_label": name, b"data": data}


def _tar_folder(src_root: Path, folder: str, archive: Path) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src_root / folder, arcname=folder)
    return archive


def make_cifar10(root: Path, *, per_batch=(3, 4, 2, 5, 3), n_test=6, seed=0, poison: str | None = None, payload=None):
    """Write a cifar-10-python.tar.gz under ``root``; return (archive, expected dict)."""
    rng = np.random.RandomState(seed)
    src = root / "src10"
    folder = src / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i, n in enumerate(per_batch, start=1):
        data, labels, batch = _batch(rng, n, 10, f"training batch {i} of 5".encode())
        batch[b"labels"] = [int(v) for v in labels]  # the originals store a plain list
        batch[b"filenames"] = [f"img_{i}_{j}.png".encode() for j in range(n)]
        if poison == f"data_batch_{i}":
            batch[b"data"] = payload
        _dump(folder / f"data_batch_{i}", batch)
        train_x.append(data)
        train_y.append(labels)
    data, labels, batch = _batch(rng, n_test, 10, b"testing batch 1 of 1")
    batch[b"labels"] = [int(v) for v in labels]
    batch[b"filenames"] = [f"test_{j}.png".encode() for j in range(n_test)]
    if poison == "test_batch":
        batch[b"labels"] = payload
    _dump(folder / "test_batch", batch)
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    if poison == "batches.meta":
        meta = payload
    _dump(folder / "batches.meta", meta)
    archive = _tar_folder(src, "cifar-10-batches-py", root / "cifar-10-python.tar.gz")
    expected = {
        "train": (np.concatenate(train_x), np.concatenate(train_y)),
        "test": (data, labels),
        "classes": CIFAR10_NAMES,
    }
    return archive, expected


def make_cifar100(root: Path, *, n_train=12, n_test=7, seed=1, dump=_dump):
    rng = np.random.RandomState(seed)
    src = root / "src100"
    folder = src / "cifar-100-python"
    folder.mkdir(parents=True)
    expected = {"classes": CIFAR100_NAMES}
    for split, n in (("train", n_train), ("test", n_test)):
        data, fine, batch = _batch(rng, n, 100, split.encode())
        batch[b"fine_labels"] = fine.astype(np.int64)  # numpy here, to cover both label containers
        batch[b"coarse_labels"] = [int(v) // 5 for v in fine]
        batch[b"filenames"] = [f"{split}_{j}.png".encode() for j in range(n)]
        dump(folder / split, batch)
        expected[split] = (data, fine)
    meta = {
        b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
        b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE],
    }
    dump(folder / "meta", meta)
    return _tar_folder(src, "cifar-100-python", root / "cifar-100-python.tar.gz"), expected


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _check_split(path: Path, data: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    split = load_split(path)
    images = split["images"]
    assert images.dtype == torch.uint8
    assert tuple(images.shape) == (len(data), 3, 32, 32)
    assert torch.equal(images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    n, c, y, x = len(data) - 1, 2, 17, 5
    assert int(images[n, c, y, x]) == int(data[n, c * 1024 + y * 32 + x])
    assert int(images[0, 0, 0, 1]) == int(data[0, 1])
    assert split["labels"].dtype == torch.int64
    assert split["labels"].tolist() == [int(v) for v in labels]
    assert split["classes"] == classes


# ----------------------------------------------------------------------------- fetch + prepare


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_fetch_and_prepare(kind, http_server, tmp_path):
    make = make_cifar10 if kind == "cifar10" else make_cifar100
    built, expected = make(tmp_path / "build")
    served = http_server.root / built.name
    served.write_bytes(built.read_bytes())

    archive = fetch(http_server.url(built.name), tmp_path / "raw" / kind / built.name, md5=_md5(built))
    assert Path(archive).read_bytes() == built.read_bytes()

    train_out, test_out = tmp_path / "prepared" / f"{kind}-train.pt", tmp_path / "prepared" / f"{kind}-test.pt"
    prepare_cifar(kind, archive, train_out=train_out, test_out=test_out)

    _check_split(train_out, *expected["train"], expected["classes"])
    _check_split(test_out, *expected["test"], expected["classes"])
    n_train = {"cifar10": 3 + 4 + 2 + 5 + 3, "cifar100": 12}[kind]
    assert len(load_split(train_out)["labels"]) == n_train
    # The archive was unpacked only for the reading: nothing but the archive stays beside it.
    assert [p.name for p in Path(archive).parent.iterdir()] == [Path(archive).name]


def test_train_batches_are_concatenated_in_order(tmp_path):
    # Distinct, recognisable batches: every pixel of batch i holds the value i.
    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    for i in range(1, 6):
        _dump(src / f"data_batch_{i}", {b"data": np.full((2, 3072), i, dtype=np.uint8), b"labels": [i, i]})
    _dump(src / "test_batch", {b"data": np.full((1, 3072), 9, dtype=np.uint8), b"labels": [9]})
    _dump(src / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES]})
    archive = _tar_folder(tmp_path / "src", "cifar-10-batches-py", tmp_path / "dl" / "c10.tar.gz")
    prepare_cifar("cifar10", archive, train_out=tmp_path / "tr.pt", test_out=tmp_path / "te.pt")
    train = load_split(tmp_path / "tr.pt")
    assert train["labels"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert train["images"][:, 0, 0, 0].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert load_split(tmp_path / "te.pt")["labels"].tolist() == [9]


def test_python2_pickles_like_the_official_archives(tmp_path):
    archive, expected = make_cifar100(tmp_path / "build", dump=_dump_py2)
    with tarfile.open(archive) as tf:
        raw = tf.extractfile("cifar-100-python/train").read()
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in ops and "BINSTRING" in ops and "BINUNICODE" not in ops
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    prepare_cifar("cifar100", archive, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    _check_split(tmp_path / "train.pt", *expected["train"], CIFAR100_NAMES)
    _check_split(tmp_path / "test.pt", *expected["test"], CIFAR100_NAMES)


# ----------------------------------------------------------------------------- hostile / wrong archives


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("where", ["batches.meta", "data_batch_3", "test_batch"])
def test_pickle_with_forbidden_global_is_refused(where, tmp_path):
    marker = tmp_path / "somefile"
    payload = _Evil(f"echo pwned > {marker}")
    archive, _ = make_cifar10(tmp_path / "build", poison=where, payload=payload)

    # Guard against a vacuous test: the poisoned pickle really calls os.system when loaded.
    with tarfile.open(archive) as tf:
        raw = tf.extractfile(f"cifar-10-batches-py/{where}").read()
    globals_used = [arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"]
    assert any(g.endswith(" system") for g in globals_used), globals_used

    with pytest.raises(ArchiveError, match="system"):
        prepare_cifar("cifar10", archive, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    assert not marker.exists(), "the pickled command was executed"


@pytest.mark.parametrize(
    ("kind", "folder"),
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")],
)
def test_archive_without_expected_folder(kind, folder, tmp_path):
    src = tmp_path / "src" / "not-the-right-folder"
    src.mkdir(parents=True)
    _dump(src / "data_batch_1", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    archive = _tar_folder(tmp_path / "src", "not-the-right-folder", tmp_path / "dl" / "wrong.tar.gz")
    with pytest.raises(ArchiveError, match=folder):
        prepare_cifar(kind, archive, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    assert not (tmp_path / "train.pt").exists()
    assert not (tmp_path / "test.pt").exists()


def test_cifar10_archive_given_as_cifar100_is_refused(tmp_path):
    archive, _ = make_cifar10(tmp_path / "build")
    with pytest.raises(ArchiveError, match="cifar-100-python"):
        prepare_cifar("cifar100", archive, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")


# ----------------------------------------------------------------------------- command line


def _kdpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kdpipe", *args], capture_output=True, text=True, timeout=180)


def test_cli_download_and_prepare(http_server, tmp_path):
    built, expected = make_cifar10(tmp_path / "build")
    (http_server.root / built.name).write_bytes(built.read_bytes())
    url = http_server.url(built.name)

    raw = tmp_path / "raw" / "cifar10" / "cifar-10-python.tar.gz"
    proc = _kdpipe("download", "--url", url, "--md5", _md5(built), "--out", str(raw))
    assert proc.returncode == 0, proc.stderr
    assert raw.read_bytes() == built.read_bytes()

    train, test = tmp_path / "data" / "train.pt", tmp_path / "data" / "test.pt"
    proc = _kdpipe("prepare-cifar", "--source", "cifar10", "--archive", str(raw), "--train", str(train), "--test", str(test))
    assert proc.returncode == 0, proc.stderr
    _check_split(train, *expected["train"], CIFAR10_NAMES)
    _check_split(test, *expected["test"], CIFAR10_NAMES)

    bad = tmp_path / "raw" / "bad" / "cifar-10-python.tar.gz"
    proc = _kdpipe("download", "--url", url, "--md5", "0" * 32, "--out", str(bad))
    assert proc.returncode != 0
    assert "md5 mismatch" in proc.stderr
    assert list(bad.parent.iterdir()) == []
