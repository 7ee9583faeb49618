"""Random data in the prepared format, at any shape: what timing runs train on (no download).

The GPU benchmarks and GPU tests need data of the paper's shapes (50,000 CIFAR images of
3 x 32 x 32; 2,975 Cityscapes pairs of 256 x 256) without downloading anything; the values do
not matter for timing, only the shapes. Labels are random too.
"""

import torch

from kdpipe.data.cityscapes import CLASS_NAMES, ids_to_colours, save_pairs
from kdpipe.data.prepared import save_split


def write_images(path, n: int, num_classes: int = 100, size: int = 32, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    # every class present at least once when n allows, so stratified subsets can be drawn
    labels[: min(n, num_classes)] = torch.arange(min(n, num_classes))
    save_split(path, images, labels, [f"class{i}" for i in range(num_classes)])


def write_pairs(path, n: int, size: int = 256, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    photos = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    ids = torch.randint(0, len(CLASS_NAMES), (n, size, size), dtype=torch.uint8, generator=g)
    save_pairs(path, photos, ids_to_colours(ids), ids)
