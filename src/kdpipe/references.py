"""Published numbers to print beside ours, always labelled as references (../shared/REFERENCES.md).

CIFAR-100 classifiers: an architecture trained alone (as a teacher, or as the student alone) is
keyed by the architecture (``kdpipe.architectures``); a method's student by method and pair
(``kdpipe.methods``). ``published_top1`` is the one place that knows which is which.
"""

from kdpipe import architectures, methods


def published_top1(method: str, teacher: str, student: str) -> tuple[float | None, str]:
    """(published CIFAR-100 top-1 %, its source) of the teacher or of ``method``'s student in this
    pair; (None, "") where nothing is published."""
    if method == "teacher":
        arch, value = architectures.get(teacher), architectures.reference(teacher, "teacher")
        return (value, arch.reference_source) if value is not None else (None, "")
    if method == methods.BASELINE:  # the student alone: its architecture's own number
        arch, value = architectures.get(student), architectures.reference(student, "alone")
        return (value, arch.reference_source) if value is not None else (None, "")
    value = methods.reference(method, teacher, student)
    return (value, methods.get(method).reference_source) if value is not None else (None, "")


# Zhang et al. 2019 (BYOT), CIFAR-100 ResNet-18, per-exit top-1 % (1/4 ... 4/4), as quoted in
# the llf000000 pytorch-be-your-own-teacher README.
BYOT_CIFAR100_RESNET18 = {"exit1": 67.85, "exit2": 74.57, "exit3": 78.23, "exit4": 78.64}
BYOT_SOURCE = "BYOT paper (Zhang et al. 2019), CIFAR-100, ResNet-18, self-distillation, top-1 %"

# Isola et al. 2017 (pix2pix), Table 6: photo -> labels on Cityscapes with an L1 loss, FCN-style
# scores (per-pixel accuracy, per-class accuracy, class IoU).
PIX2PIX_PHOTO_TO_LABEL_L1 = {"pixel_acc": 0.86, "class_acc": 0.42, "miou": 0.35}
PIX2PIX_SOURCE = "pix2pix (Isola et al. 2017), Cityscapes photo→labels, L1 loss, 256×256"
