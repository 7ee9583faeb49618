"""The autoencoder-pair family: X -> Y and Y -> X networks trained jointly, teaching each other.

X is the street photo, Y the colour label map. Both live on the device as uint8 and are scaled
to [-1, 1] per batch (the networks end in tanh); a random horizontal flip is applied to a photo
and its label map together. Evaluation measures X -> Y as segmentation (predicted colours mapped
to the nearest of the 19 Cityscapes class colours; pixel accuracy, mean IoU over the classes
that occur, void ignored) and Y -> X as image quality (L1, PSNR, SSIM on [0, 1]).
"""

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from kdpipe import losses
from kdpipe.data.cityscapes import CLASS_NAMES, VOID, colours_to_ids
from kdpipe.models import count_parameters
from kdpipe.models.autoencoder import AutoEncoderPair, build_pair, to_signed, to_uint8
from kdpipe.training.accel import full_precision


CHUNK = 2**20  # pixels counted at a time: bounds the index and, on CUDA, index_put_'s sort buffers


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """``num_classes`` x ``num_classes`` pixel counts, rows the true class, columns the predicted.

    Pixels whose target is ``ignore_index`` (or any id outside the classes) go to one extra bin,
    dropped at the end: no boolean-mask indexing, so no host sync and no data-dependent shape.
    Counted by accumulating ones into a preallocated vector (``index_put_``, deterministic on CPU
    and CUDA), not ``bincount``, whose CUDA kernel reads the input's min and max on the host.
    The pixels go ``CHUNK`` at a time through one reused int64 index buffer, so the extra memory
    is about classes² + CHUNK elements whatever the batch. Predictions must be ids in
    ``[0, num_classes)``.
    """
    c = num_classes
    target, pred = target.reshape(-1), pred.reshape(-1)
    n = target.numel()
    counts = torch.zeros(c * c + 1, dtype=torch.long, device=target.device)
    buffer = torch.empty(min(n, CHUNK), dtype=torch.long, device=target.device)
    one = torch.ones(1, dtype=torch.long, device=target.device)
    for start in range(0, n, CHUNK):
        t, p = target[start : start + CHUNK], pred[start : start + CHUNK]
        index = buffer[: t.numel()]
        index.copy_(t)  # the arguments are never written
        index.mul_(c).add_(p)
        index.masked_fill_((t < 0) | (t >= c), c * c)
        counts.index_put_((index,), one.expand_as(index), accumulate=True)
    return counts[: c * c].view(c, c)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy, mean IoU over classes present in prediction or truth, and per-class IoU."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    scores = {"pixel_acc": float(tp.sum() / confusion.sum().clamp(min=1)), "miou": float(iou.nanmean())}
    scores.update({f"iou_{name.replace(' ', '_')}": float(v) for name, v in zip(CLASS_NAMES, iou)})
    return scores


class AutoEncoderPairFamily:
    score_key = "miou"  # the epoch with the best X -> Y mean IoU is the best epoch

    def __init__(self, model: AutoEncoderPair, train: dict, test: dict, *, batch_size: int, alpha: float,
                 norm: str, augment: bool, device: torch.device):
        self.model = model.to(device)
        self.batch_size, self.alpha, self.norm, self.augment = batch_size, alpha, norm, augment
        self.train_x, self.train_y = train["photos"].to(device), train["labels_rgb"].to(device)
        self.test_x, self.test_y = test["photos"].to(device), test["labels_rgb"].to(device)
        self.test_ids = test["label_ids"].to(device)

    def train_batches(self, generator: torch.Generator):
        n = len(self.train_x)
        order = torch.randperm(n, generator=generator, device=self.train_x.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x, y = to_signed(self.train_x[idx]), to_signed(self.train_y[idx])
            if self.augment:
                flip = (torch.rand(len(idx), generator=generator, device=x.device) < 0.5)[:, None, None, None]
                x, y = torch.where(flip, x.flip(3), x), torch.where(flip, y.flip(3), y)
            yield x, y

    def loss(self, batch):
        x, y = batch
        o1, o2, matched = self.model(x, y)
        with full_precision(x.device):  # the networks ran under autocast; the loss runs in fp32
            return losses.ae_pair(o1, y, o2, x, matched, self.alpha, self.norm)

    def translate(self, x_uint8: torch.Tensor, y_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions for uint8 images: (predicted label maps, predicted photos) as uint8."""
        o1, o2, _ = self.model(to_signed(x_uint8), to_signed(y_uint8))
        return to_uint8(o1), to_uint8(o2)

    def evaluate(self, batch_size: int = 50) -> dict[str, float]:
        with full_precision(self.test_x.device):  # metrics in fp32 whatever the training precision
            return self._evaluate(batch_size)

    def _evaluate(self, batch_size: int) -> dict[str, float]:
        # No host sync per batch (a GPU keeps working): sums stay on the device, in float64 as the
        # Python floats they replace, so the numbers are the same to the last bit.
        classes = len(CLASS_NAMES)
        confusion = torch.zeros(classes, classes, dtype=torch.long, device=self.test_x.device)
        zero = torch.zeros((), dtype=torch.float64, device=self.test_x.device)
        sums = {"l1_yx": zero, "psnr_yx": zero, "ssim_yx": zero, "l1_xy": zero}
        n = len(self.test_x)
        for start in range(0, n, batch_size):
            x, y = self.test_x[start : start + batch_size], self.test_y[start : start + batch_size]
            pred_y, pred_x = self.translate(x, y)
            ids = colours_to_ids(pred_y, include_void=False)
            confusion += confusion_matrix(ids, self.test_ids[start : start + batch_size], classes, VOID)
            px, tx = pred_x.float() / 255, x.float() / 255
            b = len(x)
            sums["l1_yx"] = sums["l1_yx"] + (px - tx).abs().mean().double() * b
            # Per image, then averaged: pooling the error over a batch would tie PSNR to the batch size.
            psnr = peak_signal_noise_ratio(px, tx, data_range=1.0, reduction="none", dim=(1, 2, 3))
            sums["psnr_yx"] = sums["psnr_yx"] + psnr.clamp(max=100.0).sum().double()
            sums["ssim_yx"] = sums["ssim_yx"] + structural_similarity_index_measure(px, tx, data_range=1.0).double() * b
            sums["l1_xy"] = sums["l1_xy"] + (pred_y.float() / 255 - y.float() / 255).abs().mean().double() * b
        scores = {k: float(v) / n for k, v in sums.items()}
        scores.update(segmentation_scores(confusion))
        return scores


def make_ae_pair(cfg: dict, train: dict, test: dict, device: torch.device, teacher_path=None):
    """Family builder for the training loop: (family, model-file payload, extra metrics)."""
    model = build_pair(cfg)
    v = cfg["variant"]
    family = AutoEncoderPairFamily(model, train, test, batch_size=cfg["train"]["batch_size"], alpha=v["alpha"],
                                   norm=v["norm"], augment=cfg.get("augment", True), device=device)
    extra = {"params": count_parameters(model), "train_images": int(len(train["photos"])),
             "test_images": int(len(test["photos"]))}
    return family, {"autoencoder_pair": True, "config": cfg}, extra
