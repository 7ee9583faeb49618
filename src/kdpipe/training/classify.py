"""The classifier family: a CIFAR ResNet trained alone, as a teacher, or distilled from one."""

import torch
from torch import nn

from kdpipe import losses, methods
from kdpipe.models import build_model, count_parameters
from kdpipe.training.accel import full_precision
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
    """Images and labels live on the device as uint8; each batch is converted and augmented there.

    ``method`` names a ``kdpipe.methods`` entry (its ``step`` computes the loss) or ``teacher``
    (cross-entropy). ``model`` is the student that model.pt serves; ``peers`` (mutual learning's
    other students) and ``extra_modules`` (FitNets' regressor) train with it and sit in the resume
    checkpoint, but not in model.pt: ``self.model`` is everything trained, ``self.served_model``
    the student alone.
    """

    score_key = "top1"

    def __init__(self, model, train, test, *, method, batch_size, augment=True, teacher=None, kd=None, device,
                 stats_from=None, peers=(), extra_modules=None):
        # channels-last runs convolutions ~1.3x faster on CPU and uses tensor cores well on GPU.
        self.served_model = model.to(device, memory_format=torch.channels_last)
        self.peers = [p.to(device, memory_format=torch.channels_last) for p in peers]
        self.extras = nn.ModuleDict(extra_modules or {}).to(device, memory_format=torch.channels_last)
        if self.peers or self.extras:
            self.model = nn.ModuleDict({"student": self.served_model, "peers": nn.ModuleList(self.peers),
                                        "extras": self.extras})
        else:
            self.model = self.served_model
        self.method = method
        self.spec = methods.METHODS.get(method)  # None for the teacher (and the multi-exit family's methods)
        self.batch_size = batch_size
        self.augment = augment
        self.kd = kd or {}  # the method's resolved settings
        self.epoch = 0  # set by the training loop before each epoch (DKD's warm-up reads it)
        # Evaluation keys of students 2..n, whose own best epochs metrics.json records too.
        self.other_scores = tuple(f"top1{methods.score_suffix(k)}" for k in range(2, len(self.peers) + 2))
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        if self.spec is not None and self.spec.needs_teacher and teacher is None:
            raise ValueError(f"method {method} needs a teacher")
        self.train_x, self.train_y = train[0].to(device), train[1].to(device)
        self.test_x, self.test_y = test[0].to(device), test[1].to(device)
        self.mean, self.std = channel_stats(train[0] if stats_from is None else stats_from, device)

    def graph_key(self):
        """What of the epoch the loss reads: a CUDA-graphed step captures again whenever this
        changes (kdpipe.training.graphs). The method's ``epoch_key`` (DKD: its warm-up weight); for a
        method that declares none, the epoch itself, so its step is captured again every epoch
        whatever its loss reads. The teacher's cross-entropy reads no epoch."""
        if self.method == "teacher":
            return None
        spec = self.spec
        if spec is None or spec.epoch_key is None:
            return self.epoch
        return spec.epoch_key(self.epoch, self.kd)

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
        """The method's loss on one batch: the registry entry's ``step`` gets what it asks for."""
        x, y = batch
        spec = self.spec
        if spec is None:
            logits = self.served_model(x)
            with full_precision(x.device):
                return losses.cross_entropy(logits, y)
        features = teacher_logits = teacher_features = None
        if "student" in spec.features:
            logits, features = self.served_model(x, features=True)
        else:
            logits = self.served_model(x)
        if spec.needs_teacher:
            with torch.no_grad():
                if "teacher" in spec.features:
                    teacher_logits, teacher_features = self.teacher(x, features=True)
                else:
                    teacher_logits = self.teacher(x)
        forward = methods.Forward(logits, y, features, teacher_logits, teacher_features,
                                  peers=[peer(x) for peer in self.peers], modules=self.extras, epoch=self.epoch)
        # The networks ran under autocast; the loss (a Gram matrix, FitNets' regressor) runs in fp32
        # on their float32 outputs.
        with full_precision(x.device):
            return spec.step(forward, self.kd)

    def test_batches(self, batch_size: int = 200):
        for start in range(0, len(self.test_y), batch_size):
            x = self._normalise(self.test_x[start : start + batch_size].float() / 255)
            yield x.contiguous(memory_format=torch.channels_last), self.test_y[start : start + batch_size]

    def evaluate(self) -> dict[str, float]:
        """top1/top5 of the served student; top1_s2/top5_s2 ... of the students trained beside it.

        In fp32 whatever ``precision`` trains in: autocast is off here (the loop runs it so too)."""
        students = [self.served_model, *self.peers]
        hits = torch.zeros(len(students), 2, device=self.test_y.device)
        with full_precision(self.test_y.device):
            for x, y in self.test_batches():
                for i, student in enumerate(students):
                    hits[i] += topk_hits(student(x), y)
        scores = {}
        for i in range(len(students)):
            scores.update(accuracy_percent(hits[i], len(self.test_y), methods.score_suffix(i + 1)))
        return scores


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


def stage_shapes(model: nn.Module, image_shape, device: torch.device) -> list[tuple[int, ...]]:
    """The (C, H, W) of each stage output for one image, from a forward pass in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probe = torch.zeros(1, *image_shape, device=device).contiguous(memory_format=torch.channels_last)
        _, features = model(probe, features=True)
    model.train(was_training)
    return [tuple(f.shape[1:]) for f in features]


def refuse_pair(spec, cfg: dict, student_shapes, teacher_shapes, params: dict) -> None:
    """Stop a run whose method cannot pair its teacher and student (``Method.check_pair``): one line
    naming the method, both architectures, why, and what to change."""
    from kdpipe.errors import PairError

    refusal = methods.pair_refusal(spec.name, cfg.get("teacher"), cfg["arch"], student_shapes, teacher_shapes, params)
    if refusal:
        raise PairError(refusal)


def make_classifier(cfg: dict, train: dict, test: dict, device: torch.device, teacher_path=None):
    """Family builder for the training loop: (family, model-file payload, extra metrics).

    The student is built first, so its initial weights are those of the student trained alone with
    the same seed; mutual learning's peers and FitNets' regressor are drawn after it.
    """
    x, y = training_images(cfg, train)
    num_classes = len(train["classes"])
    model = build_model(cfg["arch"], num_classes)
    spec = methods.METHODS.get(cfg["method"])
    students = spec.students if spec else 1
    peers = [build_model(cfg["arch"], num_classes) for _ in range(students - 1)]
    teacher = load_model_file(teacher_path, device) if teacher_path else None
    params = cfg.get("method_params", {})
    extra_modules = None
    if spec is not None and (spec.extra_modules is not None or spec.check_pair is not None):
        image_shape = tuple(x.shape[1:])
        shapes = (stage_shapes(model, image_shape, torch.device("cpu")),
                  stage_shapes(teacher, image_shape, device) if teacher else None)
        if spec.check_pair is not None:
            refuse_pair(spec, cfg, *shapes, params)
        if spec.extra_modules is not None:
            extra_modules = spec.extra_modules(*shapes, params)
    family = Classifier(model, (x, y), (test["images"], test["labels"]), method=cfg["method"],
                        batch_size=cfg["train"]["batch_size"], augment=cfg.get("augment", True),
                        teacher=teacher, kd=params, device=device, peers=peers, extra_modules=extra_modules,
                        stats_from=train["images"])  # the full split's: a teacher sees what it trained on
    extra = {"params": count_parameters(model), "train_images": int(len(y)), "test_images": int(len(test["labels"])),
             "students": students}
    return family, {"arch": cfg["arch"], "num_classes": num_classes}, extra
