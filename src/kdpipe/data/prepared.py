"""The prepared format every trainer reads: one tensor file per split.

``{"images": uint8 N x C x H x W, "labels": int64 N, "classes": [names]}``, written atomically
and loaded with ``weights_only=True`` so a data file can never run code.
"""

import os

import torch

from kdpipe.io import atomic_save


def save_split(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N x C x H x W, got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be int64 of length {images.shape[0]}, got {labels.dtype} {tuple(labels.shape)}")
    atomic_save({"images": images.contiguous(), "labels": labels, "classes": list(classes)}, path)


def load_split(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
