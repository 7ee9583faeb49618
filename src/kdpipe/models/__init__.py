"""Build a classifier by name, through the architecture registry (kdpipe.architectures)."""

from kdpipe import architectures


def build_model(arch: str, num_classes: int):
    """Build a freshly initialised model; an unknown name lists the known ones (ValueError)."""
    return architectures.get(arch).build(num_classes)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
