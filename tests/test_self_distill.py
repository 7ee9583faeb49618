"""Self-distillation (BYOT): the loss against hand-computed values, exit shapes, exit costs."""

import math

import pytest
import torch
import yaml

from kdpipe.losses import self_distill
from kdpipe.models.multi_exit import MULTI_EXIT_RESNETS, exit_costs
from workflow_copy import ROOT

LN3 = math.log(3.0)


def _two_exits(requires_grad=False):
    """One sample, two classes, two exits. Shallow q1 = [0, 0]; deepest q2 = [ln 3, 0]."""
    q1 = torch.tensor([[0.0, 0.0]], requires_grad=requires_grad)
    q2 = torch.tensor([[LN3, 0.0]], requires_grad=requires_grad)
    f1 = torch.tensor([[1.0, 2.0]], requires_grad=requires_grad)
    f2 = torch.tensor([[0.0, 4.0]], requires_grad=requires_grad)
    return [q1, q2], [f1, f2], torch.tensor([0])


def test_self_distill_matches_hand_computed_values_at_t1():
    logits, feats, y = _two_exits()
    total, terms = self_distill(logits, feats, y, temperature=1.0, alpha=0.5, lam=0.1)
    # softmax(q1) = [1/2, 1/2], softmax(q2) = [3/4, 1/4]
    ce1 = math.log(2)  # 0.693147
    ce2 = -math.log(0.75)  # 0.287682
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    feat1 = ((1 - 0) ** 2 + (2 - 4) ** 2) / 2  # mean over elements: 2.5
    assert set(terms) == {"ce1", "ce2", "kl1", "feat1"}
    assert terms["ce1"].item() == pytest.approx(ce1, abs=1e-6)
    assert terms["ce2"].item() == pytest.approx(ce2, abs=1e-6)
    assert terms["kl1"].item() == pytest.approx(kl1, abs=1e-6)
    assert kl1 == pytest.approx(0.130812, abs=1e-6)
    assert terms["feat1"].item() == pytest.approx(2.5)
    assert total.item() == pytest.approx(0.5 * (ce1 + ce2) + 0.5 * kl1 + 0.1 * feat1, abs=1e-6)
    assert total.item() == pytest.approx(0.805821, abs=1e-5)


def test_temperature_scales_the_kl_by_t_squared():
    logits, feats, y = _two_exits()
    _, terms = self_distill(logits, feats, y, temperature=2.0, alpha=0.5, lam=0.1)
    # At T = 2: shallow [1/2, 1/2]; deepest softmax([ln3 / 2, 0]) = [sqrt3, 1] / (sqrt3 + 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert terms["kl1"].item() == pytest.approx(4 * kl, abs=1e-6)


def test_deepest_exit_only_has_its_cross_entropy_by_default():
    logits, feats, y = _two_exits(requires_grad=True)
    total, _ = self_distill(logits, feats, y, temperature=2.0, alpha=0.5, lam=0.1)
    total.backward()
    # d/dq2 of (1 - a) * CE(q2, 0) = (1 - a) * (softmax(q2) - onehot(0)) = 0.5 * [-1/4, 1/4]
    assert logits[1].grad[0].tolist() == pytest.approx([-0.125, 0.125], abs=1e-6)
    assert feats[1].grad is None or torch.count_nonzero(feats[1].grad) == 0
    # The shallow features get the feature term's gradient: lam * 2 * (f1 - f2) / numel = 0.1 * [1, -2]
    assert feats[0].grad[0].tolist() == pytest.approx([0.1, -0.2], abs=1e-6)


def test_teacher_can_receive_gradient_when_not_detached():
    logits, feats, y = _two_exits(requires_grad=True)
    total, _ = self_distill(logits, feats, y, temperature=2.0, alpha=0.5, lam=0.1, detach_teacher=False)
    total.backward()
    assert logits[1].grad[0].tolist() != pytest.approx([-0.125, 0.125], abs=1e-6)
    assert torch.count_nonzero(feats[1].grad) > 0


def test_every_exit_returns_logits_and_stage4_shaped_features():
    x = torch.zeros(2, 3, 32, 32)
    for name, factory in MULTI_EXIT_RESNETS.items():
        model = factory(num_classes=7, width=8)
        logits, feats = model(x)
        expansion = 4 if name == "resnet50" else 1
        assert [tuple(t.shape) for t in logits] == [(2, 7)] * 4, name
        assert [tuple(f.shape) for f in feats] == [(2, 64 * expansion, 4, 4)] * 4, name


def test_exit_costs_grow_with_depth_and_match_resnet18():
    costs = exit_costs(MULTI_EXIT_RESNETS["resnet18"](num_classes=100))
    assert [c["exit"] for c in costs] == [1, 2, 3, 4, "ensemble"]
    assert [c["macs"] for c in costs[:4]] == sorted(c["macs"] for c in costs[:4])
    # The path to exit 4 is a plain CIFAR ResNet-18: 11.22 M parameters, 0.56 G multiply-accumulates.
    assert costs[3]["params"] == 11_220_132
    assert round(costs[3]["macs"] / 1e9, 2) == 0.56
    assert costs[4]["params"] > costs[3]["params"] and costs[4]["macs"] > costs[3]["macs"]


def test_schema_lists_exactly_the_multi_exit_architectures():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    enum = schema["properties"]["self_distill"]["properties"]["arch"]["enum"]
    assert sorted(enum) == sorted(MULTI_EXIT_RESNETS)
