"""Distillation losses checked against values worked out by hand (math.exp / math.log only)."""

import math

import pytest
import torch

from kdpipe import losses

# Two samples, three classes, written out explicitly.
STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 1.0, 3.0]]  # argmax per row: 0, 2
TARGETS = [1, 2]


def hand_log_softmax(row, t=1.0):
    z = [x / t for x in row]
    lse = math.log(sum(math.exp(v) for v in z))
    return [v - lse for v in z]


def hand_ce(rows, labels):
    """Mean over rows of -log softmax(row)[label]."""
    return sum(-hand_log_softmax(r)[k] for r, k in zip(rows, labels)) / len(rows)


def hand_kl(student_rows, teacher_rows, t):
    """T^2 * mean over rows of sum_j p_teacher,j * (log p_teacher,j - log p_student,j) at temperature T."""
    total = 0.0
    for s, te in zip(student_rows, teacher_rows):
        ls, lt = hand_log_softmax(s, t), hand_log_softmax(te, t)
        total += sum(math.exp(a) * (a - b) for a, b in zip(lt, ls))
    return t * t * total / len(student_rows)


def tensors(student=STUDENT, teacher=TEACHER, targets=TARGETS):
    return (torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64),
            torch.tensor(targets, dtype=torch.int64))


def close(a, b, tol=1e-9):
    return abs(float(a) - float(b)) <= tol


def test_hand_reference_values_themselves():
    # Anchor the helpers to numbers worked out once by hand, so a helper slip cannot hide a loss bug:
    # row 1: log(e^1 + e^2 + e^0.5) - 2 = 0.464369; row 2: log(e^0 + e^-1 + e^3) - 3 = 0.065884
    assert hand_ce(STUDENT, TARGETS) == pytest.approx((0.4643688 + 0.0658839) / 2, abs=1e-6)
    # KL per row at T=2: 0.195283 and 0.072823; times T^2 = 4, averaged: 0.536213
    assert hand_kl(STUDENT, TEACHER, 2.0) == pytest.approx(0.5362133, abs=1e-6)


def test_cross_entropy_matches_hand_value():
    s, _, y = tensors()
    total, terms = losses.cross_entropy(s, y)
    assert set(terms) == {"ce"}
    assert close(total, hand_ce(STUDENT, TARGETS))
    assert close(terms["ce"], total)


def test_kd_soft_value_and_terms_at_t2_alpha07():
    s, t, y = tensors()
    total, terms = losses.kd_soft(s, t, y, temperature=2.0, alpha=0.7)
    assert set(terms) == {"ce", "kl"}
    ce = hand_ce(STUDENT, TARGETS)  # 0.265126
    kl = hand_kl(STUDENT, TEACHER, 2.0)  # 0.536213, T^2 factor included
    assert close(terms["ce"], ce)
    assert close(terms["kl"], kl)
    # Without the T^2 factor the KL term would be a quarter of that: make sure it is not.
    assert not close(terms["kl"], kl / 4, tol=1e-3)
    assert close(total, 0.3 * ce + 0.7 * kl)
    assert float(total) == pytest.approx(0.3 * 0.2651263 + 0.7 * 0.5362133, abs=1e-6)


def test_kd_soft_other_temperature_uses_t_squared():
    s, t, y = tensors()
    _, terms = losses.kd_soft(s, t, y, temperature=4.0, alpha=0.5)
    assert close(terms["kl"], hand_kl(STUDENT, TEACHER, 4.0))


def test_kd_soft_alpha_zero_is_plain_cross_entropy():
    s, t, y = tensors()
    total, terms = losses.kd_soft(s, t, y, temperature=3.0, alpha=0.0)
    plain, _ = losses.cross_entropy(s, y)
    assert close(total, hand_ce(STUDENT, TARGETS))
    assert close(total, plain)
    # the KL term is still reported (and is not zero here), it just has no weight
    assert float(terms["kl"]) > 0.01


def test_kd_soft_alpha_one_is_pure_kl():
    s, t, y = tensors()
    total, terms = losses.kd_soft(s, t, y, temperature=2.0, alpha=1.0)
    assert close(total, hand_kl(STUDENT, TEACHER, 2.0))


def test_identical_teacher_and_student_give_zero_kl():
    s, _, y = tensors()
    total, terms = losses.kd_soft(s, s.clone(), y, temperature=2.0, alpha=0.7)
    assert abs(float(terms["kl"])) < 1e-12
    assert close(total, 0.3 * hand_ce(STUDENT, TARGETS))
    assert abs(float(losses.soft_target_kl(s, s.clone(), 5.0))) < 1e-12


def test_kl_is_batch_averaged():
    s, t, y = tensors()
    s2, t2, y2 = torch.cat([s, s]), torch.cat([t, t]), torch.cat([y, y])
    total1, terms1 = losses.kd_soft(s, t, y, temperature=2.0, alpha=0.7)
    total2, terms2 = losses.kd_soft(s2, t2, y2, temperature=2.0, alpha=0.7)
    assert close(terms1["kl"], terms2["kl"])
    assert close(terms1["ce"], terms2["ce"])
    assert close(total1, total2)
    # and it is a mean over samples, not the first sample's value: row-wise KLs differ
    one_row = hand_kl(STUDENT[:1], TEACHER[:1], 2.0)
    assert not close(terms1["kl"], one_row, tol=1e-3)


def test_soft_target_kl_direction_is_teacher_to_student():
    # KL(p_teacher || p_student) is not symmetric: swapping the arguments changes the value.
    s, t, _ = tensors()
    forward = losses.soft_target_kl(s, t, 2.0)
    assert close(forward, hand_kl(STUDENT, TEACHER, 2.0))
    assert not close(forward, hand_kl(TEACHER, STUDENT, 2.0), tol=1e-4)


def test_no_gradient_into_teacher_logits():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    y = torch.tensor(TARGETS)
    total, _ = losses.kd_soft(s, t, y, temperature=2.0, alpha=0.7)
    total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_hard_uses_teacher_argmax():
    s, t, y = tensors()
    total, terms = losses.kd_hard(s, t, y, alpha=0.4)
    assert set(terms) == {"ce", "ce_teacher"}
    teacher_labels = [0, 2]  # argmax of [2, 0, 1] and [1, 1, 3]
    ce = hand_ce(STUDENT, TARGETS)  # 0.265126
    ce_teacher = hand_ce(STUDENT, teacher_labels)  # (1.464369 + 0.065884) / 2 = 0.765126
    assert ce_teacher == pytest.approx(0.7651263, abs=1e-6)
    assert close(terms["ce"], ce)
    assert close(terms["ce_teacher"], ce_teacher)
    assert close(total, 0.6 * ce + 0.4 * ce_teacher)


def test_kd_hard_alpha_one_ignores_true_labels():
    s, t, _ = tensors()
    a, _ = losses.kd_hard(s, t, torch.tensor([1, 2]), alpha=1.0)
    b, _ = losses.kd_hard(s, t, torch.tensor([2, 0]), alpha=1.0)
    assert close(a, b)
    assert close(a, hand_ce(STUDENT, [0, 2]))
    # at alpha < 1 the labels do matter
    c, _ = losses.kd_hard(s, t, torch.tensor([1, 2]), alpha=0.5)
    d, _ = losses.kd_hard(s, t, torch.tensor([2, 0]), alpha=0.5)
    assert not close(c, d, tol=1e-3)


def test_kd_hard_no_gradient_into_teacher_logits():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    total, _ = losses.kd_hard(s, t, torch.tensor(TARGETS), alpha=0.5)
    total.backward()
    assert s.grad is not None
    assert t.grad is None
