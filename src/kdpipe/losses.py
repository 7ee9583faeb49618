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
