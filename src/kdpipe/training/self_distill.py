"""The multi-exit family: a network whose deepest exit teaches its shallower exits (BYOT)."""

import torch

from kdpipe import losses
from kdpipe.models import count_parameters
from kdpipe.models.multi_exit import MULTI_EXIT_RESNETS, exit_costs
from kdpipe.training.accel import full_precision
from kdpipe.training.classify import Classifier, accuracy_percent, topk_hits, training_images


class MultiExitClassifier(Classifier):
    """Same data path as Classifier; the loss and the evaluation see every exit.

    ``method`` is ``self_distill`` (the BYOT loss), ``baseline`` (cross-entropy on the deepest
    exit only: the plain network the paper compares against) or ``deep_supervision`` (cross-entropy
    at every exit and nothing else: the control for BYOT's KL and feature terms).
    """

    def graph_key(self):
        """None of the three losses reads the epoch: a graphed step captures once per lr."""
        return None

    def loss(self, batch):
        x, y = batch
        logits, features = self.model(x)
        with full_precision(x.device):  # the network ran under autocast; its loss runs in fp32
            if self.method == "baseline":
                ce = torch.nn.functional.cross_entropy(logits[-1], y)
                return ce, {f"ce{len(logits)}": ce}
            if self.method == "deep_supervision":
                return losses.deep_supervision(logits, y)
            return losses.self_distill(logits, features, y, self.kd["temperature"], self.kd["alpha"],
                                       self.kd["lam"], detach_teacher=self.kd.get("detach_teacher", True))

    def evaluate(self) -> dict[str, float]:
        exits = self.model.num_exits
        hits = torch.zeros(exits + 1, 2, device=self.test_y.device)
        with full_precision(self.test_y.device):  # metrics in fp32 whatever the training precision
            for x, y in self.test_batches():
                logits, _ = self.model(x)
                for i, l in enumerate(logits):
                    hits[i] += topk_hits(l, y)
                ensemble = torch.stack([l.softmax(dim=1) for l in logits]).mean(dim=0)
                hits[exits] += topk_hits(ensemble, y)
        n = len(self.test_y)
        scores = {}
        for i in range(exits):
            scores.update(accuracy_percent(hits[i], n, f"_exit{i + 1}"))
        scores.update(accuracy_percent(hits[exits], n, "_ensemble"))
        # The deepest exit is the network's own answer: it picks the best epoch.
        scores["top1"], scores["top5"] = scores[f"top1_exit{exits}"], scores[f"top5_exit{exits}"]
        return scores


def build_multi_exit(arch: str, num_classes: int, width: int):
    try:
        return MULTI_EXIT_RESNETS[arch](num_classes=num_classes, width=width)
    except KeyError:
        raise ValueError(f"unknown multi-exit architecture {arch!r}; known: {', '.join(MULTI_EXIT_RESNETS)}") from None


def make_multi_exit(cfg: dict, train: dict, test: dict, device: torch.device, teacher_path=None):
    """Family builder for the training loop: (family, model-file payload, extra metrics)."""
    x, y = training_images(cfg, train)
    num_classes = len(train["classes"])
    model = build_multi_exit(cfg["arch"], num_classes, cfg["width"])
    costs = exit_costs(model, tuple(x.shape[1:]))
    family = MultiExitClassifier(model, (x, y), (test["images"], test["labels"]), method=cfg["method"],
                                 batch_size=cfg["train"]["batch_size"], augment=cfg.get("augment", True),
                                 kd=cfg.get("self_distill"), device=device, stats_from=train["images"])
    extra = {"exits": costs, "params": count_parameters(model),
             "train_images": int(len(y)), "test_images": int(len(test["labels"]))}
    return family, {"arch": cfg["arch"], "num_classes": num_classes, "width": cfg["width"], "multi_exit": True}, extra
