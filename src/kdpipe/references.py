"""Published numbers to print beside ours, always labelled as references (../shared/REFERENCES.md)."""

# HobbitLong/RepDistiller README: CIFAR-100 top-1 % of the teachers, last epoch, 240 epochs. The
# students' published numbers, per method, sit in the method registry (kdpipe.methods).
REPDISTILLER_TEACHERS_CIFAR100 = {"resnet56": 72.34, "resnet110": 74.31, "resnet32x4": 79.42}
REPDISTILLER_SOURCE = "RepDistiller README (CIFAR-100, top-1 %, last epoch)"


def teacher_reference(dataset_source: str, teacher: str) -> float | None:
    if dataset_source != "cifar100":
        return None
    return REPDISTILLER_TEACHERS_CIFAR100.get(teacher)


# Zhang et al. 2019 (BYOT), CIFAR-100 ResNet-18, per-exit top-1 % (1/4 ... 4/4), as quoted in
# the llf000000 pytorch-be-your-own-teacher README.
BYOT_CIFAR100_RESNET18 = {"exit1": 67.85, "exit2": 74.57, "exit3": 78.23, "exit4": 78.64}
BYOT_SOURCE = "BYOT paper (Zhang et al. 2019), CIFAR-100, ResNet-18, self-distillation, top-1 %"

# Isola et al. 2017 (pix2pix), Table 6: photo -> labels on Cityscapes with an L1 loss, FCN-style
# scores (per-pixel accuracy, per-class accuracy, class IoU).
PIX2PIX_PHOTO_TO_LABEL_L1 = {"pixel_acc": 0.86, "class_acc": 0.42, "miou": 0.35}
PIX2PIX_SOURCE = "pix2pix (Isola et al. 2017), Cityscapes photo→labels, L1 loss, 256×256"
