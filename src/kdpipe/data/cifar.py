"""Real CIFAR-10 / CIFAR-100 from the official "python version" archives.

The archives hold pickled dicts (``data``: uint8 N x 3072, ``labels`` or ``fine_labels``).
They are read with an unpickler that only admits the numpy types those pickles use, so a
tampered archive from a mirror cannot run code.
"""

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from kdpipe.data.archive import ArchiveError, unpacked
from kdpipe.data.prepared import save_split
from kdpipe.data.sources import CIFAR as SOURCES

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise ArchiveError(f"refusing to unpickle {module}.{name}: not part of a CIFAR batch")


def _load_batch(path: Path) -> dict:
    with open(path, "rb") as fh:
        raw = _RestrictedUnpickler(io.BufferedReader(fh), encoding="latin1").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _read_split(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in files:
        batch = _load_batch(folder / name)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def prepare_cifar(kind: str, archive: str | Path, *, train_out: str | Path, test_out: str | Path) -> None:
    """Unpack ``archive`` (temporarily) and write the prepared train and test splits."""
    spec = SOURCES[kind]
    with unpacked(archive) as extracted:
        folder = extracted / spec["folder"]
        if not folder.is_dir():
            raise ArchiveError(f"{archive} does not contain {spec['folder']}/: is it the {kind} python archive?")
        meta_file, meta_key = spec["meta"]
        classes = [c.decode() if isinstance(c, bytes) else c for c in _load_batch(folder / meta_file)[meta_key]]
        # Read every batch before writing anything: a refused pickle leaves no half-prepared set.
        splits = {split: _read_split(folder, spec[split], spec["label_key"]) for split in ("train", "test")}
    for split, out in (("train", train_out), ("test", test_out)):
        save_split(out, *splits[split], classes)
