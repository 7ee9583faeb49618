"""Model registry: every architecture a config may name, built by name."""

from kdpipe.models.resnet_cifar import CIFAR_RESNETS

ARCHITECTURES = dict(CIFAR_RESNETS)


def build_model(arch: str, num_classes: int):
    """Build a freshly initialised model; an unknown name lists the known ones."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {arch!r}; known: {known}") from None
    return factory(num_classes=num_classes)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
