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
    a, b = (x.detach() if isinstance(x, torch.Tensor) else x for x in (a, b))
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


# ---- DKD, FitNets, attention transfer, mutual learning -------------------------------------------


def hand_softmax(row, t=1.0):
    return [math.exp(v) for v in hand_log_softmax(row, t)]


def hand_kl_dist(p, q):
    """KL(p || q) = sum_j p_j (log p_j - log q_j) for two probability lists."""
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)


def hand_dkd_terms(student_rows, teacher_rows, labels, t):
    """TCKD and NCKD exactly as the DKD paper defines them, averaged over rows, times T^2."""
    tckd = nckd = 0.0
    for s, te, k in zip(student_rows, teacher_rows, labels):
        ps, pt = hand_softmax(s, t), hand_softmax(te, t)
        tckd += hand_kl_dist([pt[k], 1 - pt[k]], [ps[k], 1 - ps[k]])
        rest_s = [v for j, v in enumerate(s) if j != k]
        rest_t = [v for j, v in enumerate(te) if j != k]
        nckd += hand_kl_dist(hand_softmax(rest_t, t), hand_softmax(rest_s, t))
    n = len(student_rows)
    return t * t * tckd / n, t * t * nckd / n


def test_dkd_hand_helper_anchor():
    # Row 1 at T = 2, target 1: student p = softmax([0.5, 1, 0.25]) = [0.3072, 0.5065, 0.2392] (rounded),
    # teacher p = softmax([1, 0, 0.5]) = [0.5065, 0.1863, 0.3072]; the DKD decomposition KD = TCKD +
    # (1 - p_teacher,target) NCKD holds per row: an identity independent of how either term is coded.
    tckd, nckd = hand_dkd_terms(STUDENT[:1], TEACHER[:1], TARGETS[:1], 2.0)
    p_t_target = hand_softmax(TEACHER[0], 2.0)[1]
    assert p_t_target == pytest.approx(0.1863237, abs=1e-6)
    assert hand_kl(STUDENT[:1], TEACHER[:1], 2.0) == pytest.approx(tckd + (1 - p_t_target) * nckd, abs=1e-12)


def test_dkd_value_and_terms():
    s, t, y = tensors()
    total, terms = losses.dkd(s, t, y, temperature=2.0, alpha=1.0, beta=8.0)
    assert set(terms) >= {"ce", "tckd", "nckd"}
    tckd, nckd = hand_dkd_terms(STUDENT, TEACHER, TARGETS, 2.0)
    ce = hand_ce(STUDENT, TARGETS)
    assert close(terms["ce"], ce)
    assert close(terms["tckd"], tckd)
    assert close(terms["nckd"], nckd)
    assert close(total, ce + 1.0 * tckd + 8.0 * nckd)


def test_dkd_warmup_weight_scales_only_the_distillation_terms():
    s, t, y = tensors()
    total, terms = losses.dkd(s, t, y, temperature=4.0, alpha=0.5, beta=2.0, warmup_weight=0.25)
    tckd, nckd = hand_dkd_terms(STUDENT, TEACHER, TARGETS, 4.0)
    assert close(terms["tckd"], tckd) and close(terms["nckd"], nckd)  # terms are unweighted
    assert close(total, hand_ce(STUDENT, TARGETS) + 0.25 * (0.5 * tckd + 2.0 * nckd))
    zero, _ = losses.dkd(s, t, y, temperature=4.0, alpha=0.5, beta=2.0, warmup_weight=0.0)
    assert close(zero, hand_ce(STUDENT, TARGETS))


def test_dkd_single_row_decomposes_classical_kd():
    s, t, y = tensors(STUDENT[:1], TEACHER[:1], TARGETS[:1])
    _, terms = losses.dkd(s, t, y, temperature=2.0, alpha=1.0, beta=1.0)
    p_t_target = hand_softmax(TEACHER[0], 2.0)[1]
    assert close(losses.soft_target_kl(s, t, 2.0), terms["tckd"] + (1 - p_t_target) * terms["nckd"])


def test_dkd_no_gradient_into_teacher_logits():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    total, _ = losses.dkd(s, t, torch.tensor(TARGETS), temperature=4.0, alpha=1.0, beta=8.0)
    total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_dkd_warmup_weight_from_the_epoch():
    """The registry's step: w = min(epoch / warmup, 1) with epochs counted from 1 (mdistiller's)."""
    from kdpipe import methods

    s, t, y = tensors()
    params = {"temperature": 4.0, "alpha": 1.0, "beta": 8.0, "warmup": 4}
    for epoch, w in ((0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)):
        got, _ = methods.get("dkd").step(methods.Forward(s, y, teacher_logits=t, epoch=epoch), params)
        want, _ = losses.dkd(s, t, y, 4.0, 1.0, 8.0, warmup_weight=w)
        assert close(got, want), epoch


def test_fitnet_value_and_teacher_constant():
    f_s = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]]]], requires_grad=True)  # 1 x 1 x 2 x 2
    f_t = torch.tensor([[[[0.5, 2.0], [1.0, -1.0]]]], requires_grad=True)
    s = torch.tensor(STUDENT[:1], dtype=torch.float32)
    y = torch.tensor(TARGETS[:1])
    total, terms = losses.fitnet(s, y, f_s, f_t, beta=100.0)
    hint = (0.5 ** 2 + 0 + 1.0 ** 2 + 0) / 4  # mean of squared differences = 0.3125
    assert set(terms) == {"ce", "hint"}
    assert terms["hint"].item() == pytest.approx(0.3125)
    assert total.item() == pytest.approx(hand_ce(STUDENT[:1], TARGETS[:1]) + 100 * hint, rel=1e-6)
    total.backward()
    assert f_s.grad is not None and f_t.grad is None


def hand_attention(channels):
    """channels: list of C maps (lists of H*W values) -> mean over channels of f^2, L2-normalised."""
    n = len(channels[0])
    a = [sum(c[i] ** 2 for c in channels) / len(channels) for i in range(n)]
    norm = math.sqrt(sum(v * v for v in a))
    return [v / norm for v in a]


def test_attention_map_and_loss_by_hand():
    # One sample, two channels of 2 x 2, two stages.
    s1 = [[1.0, 0.0, 2.0, 1.0], [1.0, 2.0, 0.0, 1.0]]
    t1 = [[0.0, 1.0, 1.0, 3.0], [2.0, 0.0, 1.0, 1.0]]
    s2 = [[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 2.0, 1.0]]
    t2 = [[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]]

    def tensor(ch):
        return torch.tensor([[c[:2], c[2:]] for c in ch], dtype=torch.float64)[None]

    a = losses.attention_map(tensor(s1))
    assert a.flatten().tolist() == pytest.approx(hand_attention(s1))  # [1, 2, 2, 1] / sqrt(10)
    assert hand_attention(s1) == pytest.approx([1 / math.sqrt(10), 2 / math.sqrt(10), 2 / math.sqrt(10), 1 / math.sqrt(10)])
    stage_terms = [sum((p - q) ** 2 for p, q in zip(hand_attention(s), hand_attention(t))) / 4
                   for s, t in ((s1, t1), (s2, t2))]
    logits = torch.tensor(STUDENT[:1], dtype=torch.float64)
    y = torch.tensor(TARGETS[:1])
    t_feats = [tensor(t1).requires_grad_(), tensor(t2).requires_grad_()]
    s_feats = [tensor(s1).requires_grad_(), tensor(s2).requires_grad_()]
    total, terms = losses.attention(logits, y, s_feats, t_feats, beta=1000.0)
    assert set(terms) == {"ce", "at1", "at2"}
    assert close(terms["at1"], stage_terms[0]) and close(terms["at2"], stage_terms[1])
    assert close(total, hand_ce(STUDENT[:1], TARGETS[:1]) + 1000 * sum(stage_terms))
    total.backward()
    assert all(f.grad is None for f in t_feats) and all(f.grad is not None for f in s_feats)


def test_attention_is_batch_and_position_mean_like_repdistiller():
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 6, 5, 5, generator=g)
    _, terms = losses.attention(torch.zeros(3, 3), torch.tensor([0, 1, 2]), [f_s], [f_t], beta=1.0)
    # RepDistiller: (F.normalize(f.pow(2).mean(1).view(N, -1)) difference).pow(2).mean()
    ref = (torch.nn.functional.normalize(f_s.pow(2).mean(1).view(3, -1))
           - torch.nn.functional.normalize(f_t.pow(2).mean(1).view(3, -1))).pow(2).mean()
    assert close(terms["at1"], ref, tol=1e-7)


def test_unequal_attention_maps_pool_by_an_integer_kernel_like_adaptive_pooling():
    """Student maps twice (or four times) the teacher's size: avg_pool2d with kernel = stride = ratio,
    the same values and gradients as adaptive pooling, which has no deterministic CUDA backward."""
    # By hand: a 4x4 map of one channel pooled 2x2 -> the four block means.
    f = torch.arange(16.0).view(1, 1, 4, 4)
    pooled, same = losses.pool_to_match(f, torch.zeros(1, 1, 2, 2))
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5] and same.shape == (1, 1, 2, 2)
    g = torch.Generator().manual_seed(0)
    for s_size, t_size in ((8, 4), (4, 8), (8, 2), (6, 6)):
        f_s = torch.randn(2, 3, s_size, s_size, generator=g, dtype=torch.float64, requires_grad=True)
        f_t = torch.randn(2, 5, t_size, t_size, generator=g, dtype=torch.float64)
        logits, y = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1])
        total, terms = losses.attention(logits, y, [f_s], [f_t], beta=1.0)
        (grad,) = torch.autograd.grad(total, f_s)
        size = min(s_size, t_size)
        ref_s = torch.nn.functional.adaptive_avg_pool2d(f_s, size)
        ref_t = torch.nn.functional.adaptive_avg_pool2d(f_t, size)
        ref = (losses.attention_map(ref_s) - losses.attention_map(ref_t)).pow(2).mean()
        (ref_grad,) = torch.autograd.grad(ref, f_s)
        assert close(terms["at1"], ref, tol=1e-12) and torch.allclose(grad, ref_grad, rtol=0, atol=1e-12)


def test_attention_maps_of_sizes_that_do_not_divide_are_refused():
    assert losses.pooling_factors((8, 8), (4, 4)) == ((2, 2), (1, 1))
    assert losses.pooling_factors((3, 6), (6, 3)) == ((1, 2), (2, 1))
    assert losses.pooling_factors((6, 6), (4, 4)) is None
    with pytest.raises(ValueError, match=r"\(6, 6\) and \(4, 4\) positions: the larger is not a multiple"):
        losses.attention(torch.zeros(1, 3), torch.tensor([0]), [torch.ones(1, 2, 6, 6)], [torch.ones(1, 2, 4, 4)], 1.0)


def test_non_target_is_a_gather_in_class_order():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0]])
    got = losses._non_target(logits, torch.tensor([0, 2, 3]))
    assert got.tolist() == [[1.0, 2.0, 3.0], [10.0, 11.0, 13.0], [20.0, 21.0, 22.0]]


def test_dml_values_by_hand():
    z1, z2, y = tensors()
    total, terms = losses.dml([z1, z2], y)
    kl12 = sum(hand_kl_dist(hand_softmax(b), hand_softmax(a)) for a, b in zip(STUDENT, TEACHER)) / 2  # KL(p2 || p1)
    kl21 = sum(hand_kl_dist(hand_softmax(a), hand_softmax(b)) for a, b in zip(STUDENT, TEACHER)) / 2  # KL(p1 || p2)
    assert set(terms) == {"ce", "kl", "ce_s2", "kl_s2"}
    assert close(terms["ce"], hand_ce(STUDENT, TARGETS)) and close(terms["ce_s2"], hand_ce(TEACHER, TARGETS))
    assert close(terms["kl"], kl12) and close(terms["kl_s2"], kl21)
    assert close(total, hand_ce(STUDENT, TARGETS) + kl12 + hand_ce(TEACHER, TARGETS) + kl21)


def test_dml_peer_prediction_is_a_constant():
    """d total / d z1 = (p1 - onehot) / N from CE + (p1 - p2) / N from KL(p2 || p1) with p2 constant;
    had p2 not been detached, KL(p1 || p2) in student 2's loss would add a gradient into z1 too."""
    z1 = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    z2 = torch.tensor(TEACHER, dtype=torch.float64, requires_grad=True)
    total, _ = losses.dml([z1, z2], torch.tensor(TARGETS))
    total.backward()
    for i, (a, b, k) in enumerate(zip(STUDENT, TEACHER, TARGETS)):
        p1, p2 = hand_softmax(a), hand_softmax(b)
        want = [(2 * p1[j] - p2[j] - (1.0 if j == k else 0.0)) / 2 for j in range(3)]
        assert z1.grad[i].tolist() == pytest.approx(want, abs=1e-12)


def test_label_smoothing_by_hand_at_eps_01():
    """Two samples, three classes, eps = 0.1: the smoothed target is 1 - 0.1 + 0.1/3 on the true class
    and 0.1/3 on each other; the loss is -sum_k target_k log p_k per row, averaged over the rows."""
    s, _, y = tensors()
    eps = 0.1
    want = 0.0
    for row, k in zip(STUDENT, TARGETS):
        log_p = hand_log_softmax(row)
        target = [(1 - eps if j == k else 0.0) + eps / 3 for j in range(3)]
        want -= sum(t * lp for t, lp in zip(target, log_p)) / len(STUDENT)
    # anchor: row 1 log p = [-1.464369, -0.464369, -1.964369], row 2 [-3.065884, -4.065884, -0.065884]
    assert want == pytest.approx(0.9 * (0.4643688 + 0.0658839) / 2
                                 + 0.1 * (1.2977021 + 2.3992173) / 2, abs=1e-6)
    total, terms = losses.label_smoothing(s, y, eps)
    assert set(terms) == {"ce", "uniform"}
    assert close(total, want)
    assert close(terms["ce"], hand_ce(STUDENT, TARGETS))
    uniform = -sum(sum(hand_log_softmax(r)) / 3 for r in STUDENT) / len(STUDENT)
    assert close(terms["uniform"], uniform)
    assert close(total, 0.9 * terms["ce"].item() + 0.1 * terms["uniform"].item())
    # PyTorch's own label smoothing is the same loss
    assert close(total, torch.nn.functional.cross_entropy(s, y, label_smoothing=eps).item())


def test_label_smoothing_gradient_is_softmax_minus_the_smoothed_target():
    z = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    total, _ = losses.label_smoothing(z, torch.tensor(TARGETS), 0.1)
    total.backward()
    for i, (row, k) in enumerate(zip(STUDENT, TARGETS)):
        p = hand_softmax(row)
        want = [(p[j] - (0.9 if j == k else 0.0) - 0.1 / 3) / 2 for j in range(3)]
        assert z.grad[i].tolist() == pytest.approx(want, abs=1e-12)


def test_label_smoothing_at_eps_zero_is_plain_cross_entropy():
    s, _, y = tensors()
    assert close(losses.label_smoothing(s, y, 0.0)[0], hand_ce(STUDENT, TARGETS))
