"""Distillation losses as pure functions of tensors.

Each returns ``(total, terms)`` where ``terms`` maps a term's name to its (unweighted) value,
so the training loop can log every term. Everywhere in kdpipe ``alpha`` weights the
distillation term and ``1 - alpha`` the cross-entropy with the true labels.
"""

import torch
import torch.nn.functional as F

Terms = dict[str, torch.Tensor]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, Terms]:
    """Plain cross-entropy: the student trained alone (equivalently, any KD loss at alpha = 0)."""
    ce = F.cross_entropy(logits, targets)
    return ce, {"ce": ce}


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
