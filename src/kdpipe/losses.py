"""Distillation losses as pure functions of tensors.

Each returns ``(total, terms)`` where ``terms`` maps a term's name to its (unweighted) value,
so the training loop can log every term. Everywhere in kdpipe ``alpha`` weights the
distillation term and ``1 - alpha`` the cross-entropy with the true labels.
"""

import torch
import torch.nn.functional as F

from kdpipe.feature_maps import pooling_factors  # torch-free: the config check uses it too

Terms = dict[str, torch.Tensor]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, Terms]:
    """Plain cross-entropy: the student trained alone (equivalently, any KD loss at alpha = 0)."""
    ce = F.cross_entropy(logits, targets)
    return ce, {"ce": ce}


def label_smoothing(logits: torch.Tensor, targets: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, Terms]:
    """Cross-entropy with smoothed labels and no teacher, the control for KD (Yuan et al. 2020):
    the target is 1 - eps on the true class plus eps spread evenly over all K classes, so

    total = (1 - eps) * CE(q, y) + eps * CE(q, uniform),   CE(q, uniform) = -mean_k log q_k,

    which is ``F.cross_entropy(..., label_smoothing=eps)``: KD with a uniform "teacher". Terms:
    ce (with the true labels) and uniform (with the uniform target), unweighted.
    """
    log_p = F.log_softmax(logits, dim=1)
    ce = F.nll_loss(log_p, targets)
    uniform = -log_p.mean(dim=1).mean()
    return (1 - epsilon) * ce + epsilon * uniform, {"ce": ce, "uniform": uniform}


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch.

    The T^2 factor keeps the gradient scale independent of T (Hinton et al. 2015).
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def kd_soft(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, Terms]:
    """(1 - alpha) * CE(student, y) + alpha * T^2 * KL(teacher_T || student_T)."""
    ce = F.cross_entropy(student_logits, targets)
    kl = soft_target_kl(student_logits, teacher_logits.detach(), temperature)
    return (1 - alpha) * ce + alpha * kl, {"ce": ce, "kl": kl}


def kd_hard(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
) -> tuple[torch.Tensor, Terms]:
    """(1 - alpha) * CE(student, y) + alpha * CE(student, argmax(teacher)).

    alpha = 1 trains on the teacher's labels alone; alpha = 0 on the true labels alone.
    """
    ce = F.cross_entropy(student_logits, targets)
    ce_teacher = F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))
    return (1 - alpha) * ce + alpha * ce_teacher, {"ce": ce, "ce_teacher": ce_teacher}


def self_distill(
    exit_logits: list[torch.Tensor],
    exit_features: list[torch.Tensor],
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    lam: float,
    detach_teacher: bool = True,
) -> tuple[torch.Tensor, Terms]:
    """Be Your Own Teacher: the deepest exit C teaches the shallower ones.

    total = sum_i (1 - alpha) * CE(q_i, y)
          + sum_{i<C} [alpha * T^2 * KL(softmax(q_C/T) || softmax(q_i/T)) + lam * ||F_i - F_C||^2]

    ``||.||^2`` is the mean over elements of the squared difference (MSE), so ``lam`` does not
    depend on the feature map's size. The deepest exit gets only its cross-entropy; with
    ``detach_teacher`` (the default) its logits and features are constants in the distillation
    terms, so those terms move only the shallower exits. Terms are named ce1..ceC, kl1..kl(C-1),
    feat1..feat(C-1), numbered from the shallowest exit.
    """
    if len(exit_logits) != len(exit_features) or len(exit_logits) < 2:
        raise ValueError("self_distill needs the same number (>= 2) of exit logits and features")
    teacher_logits, teacher_features = exit_logits[-1], exit_features[-1]
    if detach_teacher:
        teacher_logits, teacher_features = teacher_logits.detach(), teacher_features.detach()
    terms: Terms = {}
    total = 0
    for i, logits in enumerate(exit_logits, start=1):
        terms[f"ce{i}"] = F.cross_entropy(logits, targets)
        total = total + (1 - alpha) * terms[f"ce{i}"]
    for i, (logits, features) in enumerate(zip(exit_logits[:-1], exit_features[:-1]), start=1):
        terms[f"kl{i}"] = soft_target_kl(logits, teacher_logits, temperature)
        terms[f"feat{i}"] = F.mse_loss(features, teacher_features)
        total = total + alpha * terms[f"kl{i}"] + lam * terms[f"feat{i}"]
    return total, terms


def deep_supervision(exit_logits: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, Terms]:
    """Cross-entropy at every exit and nothing else: sum_i CE(q_i, y), the control for BYOT (the
    ``self_distill`` loss at alpha = 0 and lam = 0, without computing its zero-weighted terms).
    Terms ce1..ceC, numbered from the shallowest exit, as ``self_distill`` names them."""
    terms: Terms = {f"ce{i}": F.cross_entropy(logits, targets) for i, logits in enumerate(exit_logits, start=1)}
    return sum(terms.values()), terms


def _distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "l1":
        return (a - b).abs().mean()
    if norm == "l2":
        return (a - b).pow(2).mean()
    raise ValueError(f"norm must be l1 or l2, got {norm!r}")


def ae_pair(
    out_xy: torch.Tensor,
    target_y: torch.Tensor,
    out_yx: torch.Tensor,
    target_x: torch.Tensor,
    matched: dict[str, tuple[torch.Tensor, torch.Tensor]],
    alpha: float,
    norm: str = "l1",
) -> tuple[torch.Tensor, Terms]:
    """Two autoencoders teaching each other (seed: Proposed Experiment).

    L = (1 - alpha) * (||O1 - Y|| + ||O2 - X||) + alpha * sum_pairs ||O_enc_k - adapter(O_dec_(5-k))||

    ``matched`` maps a pair's name to (encoder map, adapted decoder map). ``norm`` is ``l1`` (mean
    absolute difference, the default) or ``l2`` (mean squared difference); means are over all
    elements, so a term does not grow with image or feature size. Terms: rec_xy, rec_yx and
    match_<name> for each matched pair.
    """
    terms: Terms = {"rec_xy": _distance(out_xy, target_y, norm), "rec_yx": _distance(out_yx, target_x, norm)}
    total = (1 - alpha) * (terms["rec_xy"] + terms["rec_yx"])
    for name, (enc, dec) in matched.items():
        terms[f"match_{name}"] = _distance(enc, dec, norm)
        total = total + alpha * terms[f"match_{name}"]
    return total, terms


def _non_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's logits without its target class: (N, C) -> (N, C - 1), order kept.

    A gather, not a boolean mask: column j of the result is class j + (j >= target), so the shape
    never depends on the data (a mask calls nonzero, which waits on the GPU and cannot be captured).
    """
    j = torch.arange(logits.shape[1] - 1, device=logits.device)[None, :]
    return logits.gather(1, j + (j >= targets[:, None]).long())


def _binary_log_probs(logits: torch.Tensor, targets: torch.Tensor, t: float) -> torch.Tensor:
    """log [p_target, 1 - p_target] at temperature t, per row (computed without subtracting probabilities)."""
    z = logits / t
    lse_all = torch.logsumexp(z, dim=1)
    log_target = z.gather(1, targets[:, None]).squeeze(1) - lse_all
    log_rest = torch.logsumexp(_non_target(z, targets), dim=1) - lse_all
    return torch.stack([log_target, log_rest], dim=1)


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    beta: float,
    warmup_weight: float = 1.0,
) -> tuple[torch.Tensor, Terms]:
    """Decoupled KD (Zhao et al. 2022): CE(student, y) + w * (alpha * TCKD + beta * NCKD).

    With p = softmax(z / T): TCKD = T^2 * KL(b_teacher || b_student), b = [p_target, 1 - p_target];
    NCKD = T^2 * KL(p^_teacher || p^_student), p^ the softmax over the non-target classes only; both
    averaged over the batch. ``warmup_weight`` is w = min(epoch / warmup, 1), which the caller knows.
    Here ``alpha`` weights TCKD and ``beta`` NCKD, as in the paper and mdistiller (not 1 - CE's weight).
    The teacher's logits are constants. Terms (unweighted): ce, tckd, nckd.
    """
    t = float(temperature)
    teacher_logits = teacher_logits.detach()
    ce = F.cross_entropy(student_logits, targets)
    b_s, b_t = _binary_log_probs(student_logits, targets, t), _binary_log_probs(teacher_logits, targets, t)
    tckd = F.kl_div(b_s, b_t, reduction="batchmean", log_target=True) * (t * t)
    n_s = F.log_softmax(_non_target(student_logits, targets) / t, dim=1)
    n_t = F.log_softmax(_non_target(teacher_logits, targets) / t, dim=1)
    nckd = F.kl_div(n_s, n_t, reduction="batchmean", log_target=True) * (t * t)
    total = ce + float(warmup_weight) * (alpha * tckd + beta * nckd)
    return total, {"ce": ce, "tckd": tckd, "nckd": nckd}


def fitnet(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    regressed_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, Terms]:
    """FitNets (Romero et al. 2015), trained in one stage as RepDistiller does:
    CE(student, y) + beta * mean((regressor(f_s) - f_t)^2).

    ``regressed_feature`` is the student's feature map after the run's regressor (a learned 1x1
    conv + BN + ReLU that maps it to the teacher's shape); the teacher's map is a constant.
    Terms: ce, hint (the unweighted mean squared difference).
    """
    ce = F.cross_entropy(student_logits, targets)
    hint = F.mse_loss(regressed_feature, teacher_feature.detach())
    return ce + beta * hint, {"ce": ce, "hint": hint}


def pool_to_match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (N, C, H, W) maps average-pooled to the same H, W with kernel = stride = the size ratio.

    Where the sizes divide, this is what adaptive pooling gives, but its backward has a deterministic
    CUDA kernel (adaptive pooling's has none). Sizes that do not divide are refused; the classifier
    config check refuses such a pair before any job starts (``Method.check_pair``).
    """
    factors = pooling_factors(tuple(a.shape[2:]), tuple(b.shape[2:]))
    if factors is None:
        raise ValueError(f"maps of {tuple(a.shape[2:])} and {tuple(b.shape[2:])} positions: the larger is not "
                         "a multiple of the smaller, so they cannot be pooled to one size by an integer factor")
    ka, kb = factors
    if any(k > 1 for k in ka):
        a = F.avg_pool2d(a, ka)
    if any(k > 1 for k in kb):
        b = F.avg_pool2d(b, kb)
    return a, b


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: mean over channels of f^p, flattened per sample and
    L2-normalised (RepDistiller's ``Attention.at``)."""
    return F.normalize(feature.pow(p).mean(dim=1).flatten(1), dim=1)


def attention(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    student_features: list[torch.Tensor],
    teacher_features: list[torch.Tensor],
    beta: float,
    p: float = 2.0,
) -> tuple[torch.Tensor, Terms]:
    """Attention transfer: CE(student, y) + beta * sum_stages mean((a_s - a_t)^2), a = ``attention_map``.

    The mean is over batch and positions, as RepDistiller's ``Attention.at_loss``; a stage whose maps
    differ in size is average-pooled to the smaller one first (``pool_to_match``). Teacher maps are
    constants. Terms: ce, at1..atK (unweighted, one per stage).
    """
    if len(student_features) != len(teacher_features):
        raise ValueError("attention transfer needs as many student as teacher feature maps")
    ce = F.cross_entropy(student_logits, targets)
    terms: Terms = {"ce": ce}
    total = ce
    for i, (f_s, f_t) in enumerate(zip(student_features, teacher_features), start=1):
        f_s, f_t = pool_to_match(f_s, f_t.detach())
        terms[f"at{i}"] = (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
        total = total + beta * terms[f"at{i}"]
    return total, terms


def dml(logits: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, Terms]:
    """Deep mutual learning (Zhang et al. 2018): student k's loss is CE(z_k, y) + KL(p_peers || p_k),
    the peers' predictions constants (KL averaged over peers when there are more than two).

    Returns the sum over students: each student's parameters get only their own loss's gradient,
    so one optimiser step on the sum is each student's own step. Terms: ce and kl for student 1,
    ce_s2 and kl_s2 for student 2, ... (suffix as in the evaluation's top1_s2).
    """
    if len(logits) < 2:
        raise ValueError("mutual learning needs at least two students")
    log_p = [F.log_softmax(z, dim=1) for z in logits]
    terms: Terms = {}
    total = 0
    for k, z in enumerate(logits):
        suffix = "" if k == 0 else f"_s{k + 1}"
        peers = [lp.detach() for j, lp in enumerate(log_p) if j != k]
        kl = sum(F.kl_div(log_p[k], peer, reduction="batchmean", log_target=True) for peer in peers) / len(peers)
        terms[f"ce{suffix}"] = F.cross_entropy(z, targets)
        terms[f"kl{suffix}"] = kl
        total = total + terms[f"ce{suffix}"] + kl
    return total, terms
