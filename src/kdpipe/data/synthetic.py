"""An offline, deterministic CIFAR-shaped data set (3 x 32 x 32 uint8, C classes).

Each class owns a point in a small latent space. Classes come in groups whose points lie close
together (a group centre plus a smaller per-class offset), so some classes resemble each other
and others do not, in graded ways. An image renders its sample's latent point as a mixture of
fixed, coloured, oriented texture patterns, then shifts it and adds noise. A sample is its
class's point plus noise, sometimes pulled part-way towards a similar class: the label stays
hard, but the evidence is graded, which is exactly the information a teacher's soft targets
carry and a one-hot label does not.
"""

import math

import torch

from kdpipe.data.prepared import save_split


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _patterns(num_patterns: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Fixed coloured Gabor-like patterns, K x 3 x size x size, each of unit RMS."""
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    out = []
    for _ in range(num_patterns):
        theta = torch.rand((), generator=g) * math.pi
        freq = 2 + 6 * torch.rand((), generator=g)
        phase = 2 * math.pi * torch.rand((), generator=g)
        cy, cx = (torch.rand(2, generator=g) * 1.2 - 0.6).tolist()
        width = 0.35 + 0.5 * torch.rand((), generator=g)
        wave = torch.cos(freq * (xx * torch.cos(theta) + yy * torch.sin(theta)) * math.pi + phase)
        envelope = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
        colour = torch.randn(3, generator=g)
        p = colour[:, None, None] * (wave * envelope)[None]
        out.append(p / p.pow(2).mean().sqrt())
    return torch.stack(out)


def class_points(num_classes: int, group_size: int, latent_dim: int, within_group: float, g: torch.Generator) -> torch.Tensor:
    """Latent point per class: its group's centre plus a smaller class offset."""
    groups = math.ceil(num_classes / group_size)
    centres = torch.randn(groups, latent_dim, generator=g)
    offsets = torch.randn(num_classes, latent_dim, generator=g) * within_group
    return centres[torch.arange(num_classes) // group_size] + offsets


def generate(
    num_train: int,
    num_test: int,
    num_classes: int = 10,
    group_size: int = 2,
    latent_dim: int = 16,
    num_patterns: int = 24,
    within_group: float = 0.6,
    sample_noise: float = 0.55,
    mix_max: float = 0.45,
    pixel_noise: float = 0.35,
    max_shift: int = 4,
    seed: int = 0,
    size: int = 32,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {"train": (images, labels), "test": (images, labels)}; same arguments, same bytes."""
    g = _generator(seed)
    points = class_points(num_classes, group_size, latent_dim, within_group, g)
    patterns = _patterns(num_patterns, size, g).reshape(num_patterns, -1)
    mixing = torch.randn(latent_dim, num_patterns, generator=g) / math.sqrt(latent_dim)
    # Neighbour choice favours similar classes: softmax over negative squared distances.
    dist = torch.cdist(points, points).pow(2)
    dist.fill_diagonal_(float("inf"))
    neighbour_probs = torch.softmax(-dist / dist[torch.isfinite(dist)].median(), dim=1)

    def render(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        z = points[labels] + sample_noise * torch.randn(n, latent_dim, generator=g)
        other = torch.multinomial(neighbour_probs[labels], 1, generator=g).squeeze(1)
        m = mix_max * torch.rand(n, 1, generator=g)
        z = (1 - m) * z + m * points[other]
        amplitudes = torch.tanh(z @ mixing) * 1.5
        images = (amplitudes @ patterns).reshape(n, 3, size, size) / math.sqrt(num_patterns)
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=g)
        images = torch.stack([torch.roll(img, tuple(s.tolist()), dims=(1, 2)) for img, s in zip(images, shifts)])
        images = images + pixel_noise * torch.randn(images.shape, generator=g)
        pixels = (128 + 48 * images).round().clamp(0, 255).to(torch.uint8)
        return pixels, labels.to(torch.int64)

    return {"train": render(num_train), "test": render(num_test)}


def class_names(num_classes: int, group_size: int) -> list[str]:
    return [f"group{c // group_size}-{chr(ord('a') + c % group_size)}" for c in range(num_classes)]


def prepare_synthetic(params: dict, *, train_out, test_out) -> None:
    """Write the prepared train and test splits from the generator's keyword ``params``."""
    splits = generate(**params)
    names = class_names(params.get("num_classes", 10), params.get("group_size", 2))
    for split, out in (("train", train_out), ("test", test_out)):
        save_split(out, *splits[split], names)
