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

from kdpipe.data.archive import ArchiveError, unpacked, verify_placed
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


def _load_batch(path: Path, archive=None) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = _RestrictedUnpickler(io.BufferedReader(fh), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ArchiveError(f"{path.name} in {archive or path} is not a readable CIFAR batch ({err}): "
                           "a damaged or wrong archive; delete it and download it again") from err
    if not isinstance(raw, dict):
        raise ArchiveError(f"{path.name} in {archive or path} is not a CIFAR batch (a {type(raw).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _read_split(folder: Path, files: list[str], label_key: str, archive) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in files:
        batch = _load_batch(folder / name, archive)
        try:
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError, TypeError) as err:
            raise ArchiveError(f"{name} in {archive} is not a CIFAR batch of this kind ({type(err).__name__}: {err}): "
                               "is it the right archive?") from err
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def prepare_cifar(kind: str, archive: str | Path, *, train_out: str | Path, test_out: str | Path,
                  md5: str | None = None) -> None:
    """Check ``archive``'s md5 (a file placed by hand too), unpack it (temporarily) and write the
    prepared train and test splits."""
    spec = SOURCES[kind]
    if md5:
        verify_placed(archive, md5=md5)
    with unpacked(archive) as extracted:
        folder = extracted / spec["folder"]
        if not folder.is_dir():
            raise ArchiveError(f"{archive} does not contain {spec['folder']}/: is it the {kind} python archive?")
        meta_file, meta_key = spec["meta"]
        missing = [f"{spec['folder']}/{n}" for n in (meta_file, *spec["train"], *spec["test"]) if not (folder / n).is_file()]
        if missing:
            raise ArchiveError(f"{archive} is the wrong archive: it lacks {', '.join(missing)}. "
                               f"Is it the {kind} python version ({SOURCES[kind]['url']})?")
        meta = _load_batch(folder / meta_file, archive)
        if meta_key not in meta:
            raise ArchiveError(f"{archive}: {meta_file} has no {meta_key!r}; is it the {kind} python archive?")
        classes = [c.decode() if isinstance(c, bytes) else c for c in meta[meta_key]]
        # Read every batch before writing anything: a refused pickle leaves no half-prepared set.
        splits = {split: _read_split(folder, spec[split], spec["label_key"], archive) for split in ("train", "test")}
    for split, out in (("train", train_out), ("test", test_out)):
        save_split(out, *splits[split], classes)
