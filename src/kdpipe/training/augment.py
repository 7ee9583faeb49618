"""Batched augmentation on the device the batch lives on: no worker processes, no PIL."""

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop after zero padding by ``pad`` pixels, then a random horizontal flip.

    Same as torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip on each image,
    done for the whole batch at once with one gather.
    """
    b, _, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = dy[:, None] + torch.arange(h, device=dev)
    cols = dx[:, None] + torch.arange(w, device=dev)
    # Advanced indices around a slice put the indexed dims first: result is B x H x W x C.
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()
