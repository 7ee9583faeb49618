"""The classifier architectures, each described once: the registry the models, the config schema
(``$defs/arch``), the schedule, the tables and the docs read.

An architecture is one ``Architecture`` entry: its name (the word in configs and run names), a
one-line description, its constructor, the rule its stage outputs follow and their shapes, its parameter count on
CIFAR-100 (a test builds it and compares), its expected seconds per epoch (kdpipe.schedule orders
jobs by it; a config naming an architecture without one is refused) and its published CIFAR-100
top-1 by role, alone as a student or as a teacher. Adding one is its entry here, its module under
``kdpipe.models`` and its tests (docs/architectures.md).

The contract of a built model (what every method may rely on):

- ``model(x)`` returns the logits, ``(batch, num_classes)``, for images ``(batch, 3, H, W)``;
- ``model(x, features=True)`` returns ``(logits, [f1, f2, f3])``: the outputs of its three stages,
  in order, each ``(batch, channels, h, w)``; asking for them changes neither the logits nor the
  parameters. They are the maps RepDistiller's ``forward(x, is_feat=True)`` hands FitNets' hint
  (``stage`` 1-3) and attention transfer (all three): for the post-activation ResNets each stage's
  output after its last ReLU; for the pre-activation WideResNets each stage's block sum, before
  the next BN + ReLU (so not rectified). ``stages`` says which rule an entry follows.

This module does not import torch (the Snakefile and the schema read it when the DAG loads);
``build`` imports the model's module when it is first called.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Callable


@dataclass(frozen=True)
class Architecture:
    name: str  # the word in configs and run names
    description: str  # one line
    build: Callable  # build(num_classes) -> nn.Module, honouring the contract above
    stages: str  # the rule its three stage outputs follow, one line
    # (channels, height, width) of its three stage outputs on a 32 x 32 CIFAR image (a test builds it
    # and compares): the config check pairs architectures by them before any job starts.
    stage_shapes: tuple[tuple[int, int, int], ...]
    params_cifar100: int  # parameter count with 100 classes (checked against the built model)
    # Expected seconds per epoch of 50,000 CIFAR images on one H200, eager fp32 (kdpipe.schedule);
    # None: not known, and a config that trains it is refused until it is given.
    epoch_s: float | None
    references: dict = field(default_factory=dict)  # role ("alone", "teacher") -> published CIFAR-100 top-1 %
    reference_source: str = ""
    # The epoch the source says its numbers are from: "best epoch", "last epoch" or "not stated"
    # (kdpipe.references.EPOCH_CONVENTIONS); what the source states, never what it probably did.
    reference_epoch: str = ""


def _cifar_resnet(depth: int, filters: list[int], num_classes: int):
    from kdpipe.models.resnet_cifar import CifarResNet

    return CifarResNet(depth, filters, num_classes)


def _wide_resnet(depth: int, widen_factor: int, num_classes: int):
    from kdpipe.models.wrn import WideResNet

    return WideResNet(depth, widen_factor, num_classes)


NARROW = [16, 16, 32, 64]  # [stem, stage1, stage2, stage3] channels
WIDE = [32, 64, 128, 256]  # RepDistiller's "x4" ResNets
RESNET_STAGES = "after each stage's last ReLU (post-activation basic blocks; RepDistiller's preact=False)"
WRN_STAGES = ("each stage's block sum, before the next BN + ReLU (pre-activation: not rectified; "
              "RepDistiller's wrn.py feats[1:4])")
# Its README does not say which epoch (train_student.py prints the best test accuracy, saves the last).
REPDISTILLER = "RepDistiller README (CIFAR-100, top-1 %, 240 epochs)"
REPDISTILLER_EPOCH = "not stated"


def _shapes(channels) -> tuple[tuple[int, int, int], ...]:
    # Three stages at strides 1, 2, 2 on a 32 x 32 image: maps of 32, 16 and 8 positions a side.
    return tuple((c, size, size) for c, size in zip(channels, (32, 16, 8)))


def _resnet(depth: int, filters: list[int], params: int, epoch_s: float, references=None) -> Architecture:
    name = f"resnet{depth}" + ("x4" if filters == WIDE else "")
    width = ", channels x4 (32, 64, 128, 256)" if filters == WIDE else ""
    return Architecture(
        name, f"CIFAR ResNet, depth {depth}{width} (RepDistiller's resnet.py)",
        partial(_cifar_resnet, depth, filters), RESNET_STAGES, _shapes(filters[1:]), params, epoch_s,
        references or {}, REPDISTILLER if references else "", REPDISTILLER_EPOCH if references else "")


# Seconds per epoch: resnet56, resnet32x4, resnet20 and resnet8x4 were measured (issue 11's table);
# the other ResNets are resnet56's time scaled by depth (estimated, not measured).
_PER_LAYER_S = 14.5 / 56

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in [
    _resnet(8, NARROW, 83_892, round(8 * _PER_LAYER_S, 2)),
    _resnet(14, NARROW, 181_108, round(14 * _PER_LAYER_S, 2)),
    _resnet(20, NARROW, 278_324, 6.3, {"alone": 69.06}),
    _resnet(32, NARROW, 472_756, round(32 * _PER_LAYER_S, 2), {"alone": 71.14}),
    _resnet(44, NARROW, 667_188, round(44 * _PER_LAYER_S, 2)),
    _resnet(56, NARROW, 861_620, 14.5, {"teacher": 72.34}),
    _resnet(110, NARROW, 1_736_564, round(110 * _PER_LAYER_S, 2), {"teacher": 74.31}),
    _resnet(8, WIDE, 1_233_540, 4.1, {"alone": 72.50}),
    _resnet(32, WIDE, 7_433_860, 9.0, {"teacher": 79.42}),
    # epoch_s of the WideResNets: ESTIMATED, not measured. Eager time on the H200 follows the number
    # of layers, not FLOPs (resnet32x4 has 8.6x resnet56's FLOPs and takes 0.6x its time): a fit of
    # the four measured ResNets, 2.17 s + 0.219 s per layer of depth, gives these.
    Architecture("wrn_40_2", "WideResNet, depth 40, widen factor 2 (RepDistiller's wrn.py)",
                 partial(_wide_resnet, 40, 2), WRN_STAGES, _shapes((32, 64, 128)), 2_255_156, 10.9,
                 {"teacher": 75.61}, REPDISTILLER, REPDISTILLER_EPOCH),
    Architecture("wrn_16_2", "WideResNet, depth 16, widen factor 2 (RepDistiller's wrn.py)",
                 partial(_wide_resnet, 16, 2), WRN_STAGES, _shapes((32, 64, 128)), 703_284, 5.7,
                 {"alone": 73.26}, REPDISTILLER, REPDISTILLER_EPOCH),
]}


def get(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def reference(name: str, role: str) -> float | None:
    """The published CIFAR-100 top-1 of this architecture trained alone in ``role`` ("alone" as a
    student, "teacher"), or None where none is registered."""
    return get(name).references.get(role)


def schema_fragment() -> dict:
    """The config schema's ``$defs/arch``, generated from the registry."""
    return {"description": "a classifier architecture of kdpipe.architectures (docs/architectures.md)",
            "enum": list(ARCHITECTURES)}
