"""Published numbers to print beside ours, always labelled as references (../shared/REFERENCES.md).

CIFAR-100 classifiers: an architecture trained alone (as a teacher, or as the student alone) is
keyed by the architecture (``kdpipe.architectures``); a method's student by method and pair
(``kdpipe.methods``). ``published`` is the one place that knows which is which.

Each source's epoch convention is recorded as it states it, never guessed: "best epoch" (the
best test accuracy over training), "last epoch" (the final model), or "not stated". RepDistiller's
README does not say (its train_student.py prints the best test accuracy and saves the last model);
mdistiller's tables report the best epoch; the DML and BYOT numbers name no epoch.
"""

from dataclasses import dataclass

from kdpipe import architectures, methods

BEST_EPOCH = "best epoch"
LAST_EPOCH = "last epoch"
NOT_STATED = "not stated"
EPOCH_CONVENTIONS = (BEST_EPOCH, LAST_EPOCH, NOT_STATED)


@dataclass(frozen=True)
class Published:
    top1: float  # CIFAR-100 top-1 %
    source: str  # who published it, in one line
    epoch: str  # the epoch convention the source states: one of EPOCH_CONVENTIONS


def published(method: str, teacher: str, student: str) -> Published | None:
    """The published number of the teacher (``method`` "teacher") or of ``method``'s student in this
    pair; None where nothing is published."""
    if method in ("teacher", methods.BASELINE):  # trained alone: its architecture's own number
        arch = architectures.get(teacher if method == "teacher" else student)
        value = architectures.reference(arch.name, "teacher" if method == "teacher" else "alone")
        return None if value is None else Published(value, arch.reference_source, arch.reference_epoch)
    value = methods.reference(method, teacher, student)
    m = methods.get(method)
    return None if value is None else Published(value, m.reference_source, m.reference_epoch)


def published_top1(method: str, teacher: str, student: str) -> tuple[float | None, str]:
    """(published CIFAR-100 top-1 %, its source) of the teacher or of ``method``'s student in this
    pair; (None, "") where nothing is published."""
    p = published(method, teacher, student)
    return (None, "") if p is None else (p.top1, p.source)


# Zhang et al. 2019 (BYOT), CIFAR-100 ResNet-18, per-exit top-1 % (1/4 ... 4/4), as quoted in
# the llf000000 pytorch-be-your-own-teacher README; neither says at which epoch.
BYOT_CIFAR100_RESNET18 = {"exit1": 67.85, "exit2": 74.57, "exit3": 78.23, "exit4": 78.64}
BYOT_SOURCE = ("BYOT paper (Zhang et al. 2019) as quoted in the pytorch-be-your-own-teacher README, "
               "CIFAR-100, ResNet-18, self-distillation, top-1 %")
BYOT_EPOCH = NOT_STATED
# What BYOT's numbers are for: its method, on CIFAR-100, a ResNet-18 of the paper's width.
BYOT_METHOD, BYOT_ARCH, BYOT_WIDTH = "self_distill", "resnet18", 64


def byot_published(method: str, arch: str, width: int, exit_name: str) -> Published | None:
    """BYOT's published number for this multi-exit run's exit ("exit1" … "exit4"); None for another
    method, architecture, width or exit (the data set is the caller's to check: CIFAR-100)."""
    if (method, arch, int(width)) != (BYOT_METHOD, BYOT_ARCH, BYOT_WIDTH) or exit_name not in BYOT_CIFAR100_RESNET18:
        return None
    return Published(BYOT_CIFAR100_RESNET18[exit_name], BYOT_SOURCE, BYOT_EPOCH)


# Isola et al. 2017 (pix2pix), Table 6: photo -> labels on Cityscapes with an L1 loss, FCN-style
# scores (per-pixel accuracy, per-class accuracy, class IoU).
PIX2PIX_PHOTO_TO_LABEL_L1 = {"pixel_acc": 0.86, "class_acc": 0.42, "miou": 0.35}
PIX2PIX_SOURCE = "pix2pix (Isola et al. 2017), Cityscapes photo→labels, L1 loss, 256×256"
