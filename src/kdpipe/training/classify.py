"""The classifier family: a CIFAR ResNet trained alone, as a teacher, or distilled from one."""

import torch
from torch import nn

from kdpipe import losses
from kdpipe.models import build_model, count_parameters
from kdpipe.training.augment import random_crop_flip


def stratified_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of ``size`` training images, equally many per class, the same for every method."""
    g = torch.Generator().manual_seed(10_007 + int(seed))
    classes = labels.unique()
    per_class, extra = divmod(size, len(classes))
    picked = []
    for i, c in enumerate(classes.tolist()):
        idx = (labels == c).nonzero().squeeze(1)
        take = per_class + (1 if i < extra else 0)
        if take > len(idx):
            raise ValueError(f"train_subset {size} asks for {take} images of class {c}; only {len(idx)} exist")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:take]])
    return torch.cat(picked).sort().values


def channel_stats(images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], shaped for broadcasting."""
    scaled = images.to(device).float() / 255
    return scaled.mean(dim=(0, 2, 3), keepdim=True), scaled.std(dim=(0, 2, 3), keepdim=True)


def load_model_file(path, device: torch.device) -> nn.Module:
    """Rebuild a model saved as ``{"arch", "num_classes", "state_dict"}`` (never runs code).

    A file torch refuses (``weights_only``: it holds code or objects kdpipe never writes), a
    damaged one, or one of another layout raises ModelFileError naming the file.
    """
    import pickle

    from kdpipe.errors import ModelFileError

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(saved["arch"], saved["num_classes"])
        model.load_state_dict(saved["state_dict"])
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"cannot load the model file {path}: it was not written by kdpipe, or it is damaged "
            f"({type(err).__name__}: {first}). Nothing in it was run. Delete it and let Snakemake train "
            "it again, or restore it with `dvc pull`."
        ) from err
    return model.to(device, memory_format=torch.channels_last)


class Classifier:
    """Images and labels live on the device as uint8; each batch is converted and augmented there."""

    score_key = "top1"

    def __init__(self, model, train, test, *, method, batch_size, augment=True, teacher=None, kd=None, device,
                 stats_from=None):
        # channels-last runs convolutions ~1.3x faster on CPU and uses tensor cores well on GPU.
        self.model = model.to(device, memory_format=torch.channels_last)
        self.method = method
        self.batch_size = batch_size
        self.augment = augment
        self.kd = kd or {}
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        if method in ("kd_soft", "kd_hard") and teacher is None:
            raise ValueError(f"method {method} needs a teacher")
        self.train_x, self.train_y = train[0].to(device), train[1].to(device)
        self.test_x, self.test_y = test[0].to(device), test[1].to(device)
        self.mean, self.std = channel_stats(train[0] if stats_from is None else stats_from, device)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def train_batches(self, generator: torch.Generator):
        n = len(self.train_y)
        order = torch.randperm(n, generator=generator, device=self.train_y.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.train_x[idx].float() / 255
            if self.augment:
                x = random_crop_flip(x, pad=4, generator=generator)
            yield self._normalise(x).contiguous(memory_format=torch.channels_last), self.train_y[idx]

    def loss(self, batch):
        x, y = batch
        logits = self.model(x)
        if self.method in ("alone", "teacher"):
            return losses.cross_entropy(logits, y)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        if self.method == "kd_soft":
            return losses.kd_soft(logits, teacher_logits, y, self.kd["temperature"], self.kd["alpha"])
        return losses.kd_hard(logits, teacher_logits, y, self.kd["alpha"])

    def test_batches(self, batch_size: int = 200):
        for start in range(0, len(self.test_y), batch_size):
            x = self._normalise(self.test_x[start : start + batch_size].float() / 255)
            yield x.contiguous(memory_format=torch.channels_last), self.test_y[start : start + batch_size]

    def evaluate(self) -> dict[str, float]:
        hits = torch.zeros(2, device=self.test_y.device)
        for x, y in self.test_batches():
            hits += topk_hits(self.model(x), y)
        return accuracy_percent(hits, len(self.test_y))


def topk_hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of top-1 and top-5 hits in a batch, as a 2-vector (stays on the device)."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return torch.stack([(top[:, 0] == targets).sum(), (top == targets[:, None]).any(dim=1).sum()]).float()


def accuracy_percent(hits: torch.Tensor, n: int, suffix: str = "") -> dict[str, float]:
    top1, top5 = (100.0 * hits / n).tolist()
    return {f"top1{suffix}": top1, f"top5{suffix}": top5}


def training_images(cfg: dict, split: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's training images: all of them, or its stratified transfer set (``train_subset``)."""
    x, y = split["images"], split["labels"]
    if cfg.get("train_subset"):
        idx = stratified_subset(y, cfg["train_subset"], cfg["seed"])
        x, y = x[idx], y[idx]
    return x, y


def make_classifier(cfg: dict, train: dict, test: dict, device: torch.device, teacher_path=None):
    """Family builder for the training loop: (family, model-file payload, extra metrics)."""
    x, y = training_images(cfg, train)
    num_classes = len(train["classes"])
    model = build_model(cfg["arch"], num_classes)
    teacher = load_model_file(teacher_path, device) if teacher_path else None
    family = Classifier(model, (x, y), (test["images"], test["labels"]), method=cfg["method"],
                        batch_size=cfg["train"]["batch_size"], augment=cfg.get("augment", True),
                        teacher=teacher, kd=cfg.get("kd"), device=device,
                        stats_from=train["images"])  # the full split's: a teacher sees what it trained on
    extra = {"params": count_parameters(model), "train_images": int(len(y)), "test_images": int(len(test["labels"]))}
    return family, {"arch": cfg["arch"], "num_classes": num_classes}, extra
