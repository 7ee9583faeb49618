"""Precision and what it may change (issue 15 items 5 and 7), checked on the CPU, where
``precision: bf16`` runs CPU autocast.

Every reported metric is computed in fp32 outside autocast: the same model and data give the same
metrics whatever ``precision`` says. A loss's own arithmetic (a Gram matrix, FitNets' regressor)
runs in fp32 while the networks' forwards run under autocast.
"""

import dataclasses

import pytest
import torch

from kdpipe import losses, methods
from kdpipe.data.cityscapes import CLASS_NAMES, PALETTE, VOID
from kdpipe.models import build_model
from kdpipe.models.autoencoder import AutoEncoderPair
from kdpipe.training import accel
from kdpipe.training.ae_pair import AutoEncoderPairFamily
from kdpipe.training.classify import Classifier, stage_shapes
from kdpipe.training.graphs import EagerStep
from kdpipe.training.loop import Recipe, fit

CPU = torch.device("cpu")


class EvaluateOnly:
    """No training batches: the loop only evaluates the model as built, under the run's settings."""

    def train_batches(self, generator):
        return iter(())


class ClassifierEval(EvaluateOnly, Classifier):
    pass


class PairEval(EvaluateOnly, AutoEncoderPairFamily):
    pass


def make(cls=Classifier, method="alone", teacher=None, kd=None, n=200, extra_modules=None):
    """A resnet8 classifier on ``n`` random 16 x 16 images (its test set: the same images)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(0)
    return cls(build_model("resnet8", 10), (x, y), (x, y), method=method, batch_size=32, device=CPU, teacher=teacher,
               kd=kd or {}, extra_modules=extra_modules)


def pair_family():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(CLASS_NAMES) + 1, (6, 32, 32), generator=g).to(torch.uint8)
    ids[ids == len(CLASS_NAMES)] = VOID
    rgb = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    known = ids != VOID
    rgb.permute(0, 2, 3, 1)[known] = PALETTE[ids[known].long()].to(torch.uint8)
    photos = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    data = {"photos": photos, "labels_rgb": rgb, "label_ids": ids}
    torch.manual_seed(0)
    return PairEval(AutoEncoderPair(4, [(1, 4)], "maxpool"), data, data, batch_size=4, alpha=0.5, norm="l1",
                    augment=False, device=CPU)


def evaluated(tmp_path, family, precision):
    recipe = {"epochs": 1, "batch_size": 4, "lr": 0.1}
    cfg = {"run": precision, "train": {**recipe, "precision": precision}}
    out = fit(family, Recipe.from_dict(recipe), seed=0, device=CPU, resume_path=tmp_path / f"{precision}.pt",
              run_config=cfg)
    assert out.settings["precision"] == precision
    return {k: v for k, v in out.history[0].items() if k != "seconds"}


def classifier_family():
    fam = make(ClassifierEval)
    with torch.no_grad():  # logits near 256, where bf16 steps by 2: its rounding would change the top-5
        fam.served_model.fc.bias += 256.0
    return fam


@pytest.mark.parametrize("build", [classifier_family, pair_family], ids=["classifier", "ae_pair"])
def test_metrics_are_the_same_under_fp32_and_bf16(tmp_path, build):
    fp32 = evaluated(tmp_path, build(), "fp32")
    bf16 = evaluated(tmp_path, build(), "bf16")
    assert fp32 == bf16
    assert len(fp32) > 3  # epoch, lr and the metrics themselves


def gram_step(seen):
    """A method whose loss multiplies matrices: the Gram matrix of the last stage's features."""

    def step(o, p):
        f = o.features[-1].flatten(1)
        gram = f @ f.t()
        seen.append((f.dtype, gram.dtype))
        total, terms = losses.cross_entropy(o.logits, o.targets)
        return total + 1e-3 * gram.mean(), terms

    return step


def test_a_loss_matmul_runs_in_fp32_under_bf16(tmp_path, monkeypatch):
    seen = []
    probe = dataclasses.replace(methods.METHODS["alone"], name="gram_probe", features=("student",),
                                step=gram_step(seen))
    monkeypatch.setitem(methods.METHODS, "gram_probe", probe)
    fam = make(method="gram_probe", n=40)
    inside = []
    fam.served_model.layer3.register_forward_hook(lambda m, a, out: inside.append(out.dtype))
    recipe = {"epochs": 1, "batch_size": 32, "lr": 0.1}
    fit(fam, Recipe.from_dict(recipe), seed=0, device=CPU, resume_path=tmp_path / "gram.pt",
        run_config={"run": "gram", "train": {**recipe, "precision": "bf16"}})
    assert seen == [(torch.float32, torch.float32)] * 2  # 40 images: two batches
    # while the network itself ran under autocast (two training batches), and in fp32 to evaluate
    assert inside == [torch.bfloat16, torch.bfloat16, torch.float32]


def test_fitnets_regressor_runs_in_fp32_under_bf16():
    torch.manual_seed(1)
    teacher = build_model("resnet8", 10)
    params = methods.resolve_params("fitnet")
    shapes = stage_shapes(build_model("resnet8", 10), (3, 16, 16), CPU), stage_shapes(teacher, (3, 16, 16), CPU)
    regressor = methods.METHODS["fitnet"].extra_modules(*shapes, params)
    fam = make(method="fitnet", teacher=teacher, kd=params, n=40, extra_modules=regressor)
    conv_out = []
    fam.extras["regressor"][0].register_forward_hook(lambda m, a, out: conv_out.append(out.dtype))
    acc = accel.resolve({"precision": "bf16"}, CPU)
    opt = torch.optim.SGD(fam.model.parameters(), lr=0.1)
    batch = next(iter(fam.train_batches(torch.Generator().manual_seed(0))))
    with accel.float32_outputs(fam, acc):
        total, terms = EagerStep(fam, opt, lambda: accel.autocast(acc, CPU))(batch)
    assert conv_out == [torch.float32]
    assert total.dtype == terms["hint"].dtype == torch.float32
