"""Published numbers to print beside ours, always labelled as references (../shared/REFERENCES.md)."""

# HobbitLong/RepDistiller README: CIFAR-100 top-1 %, last epoch, 240 epochs.
REPDISTILLER_CIFAR100 = {
    ("resnet56", "resnet20"): {"teacher": 72.34, "alone": 69.06, "kd_soft": 70.66},
    ("resnet110", "resnet32"): {"teacher": 74.31, "alone": 71.14, "kd_soft": 73.08},
    ("resnet32x4", "resnet8x4"): {"teacher": 79.42, "alone": 72.50, "kd_soft": 73.33},
}
REPDISTILLER_SOURCE = "RepDistiller README (CIFAR-100, top-1 %, last epoch)"


def kd_reference(dataset_source: str, teacher: str, student: str) -> dict | None:
    if dataset_source != "cifar100":
        return None
    return REPDISTILLER_CIFAR100.get((teacher, student))
