"""Distillation: logit losses (full and top-k teacher)."""

from r1jax.distill.losses import (
    TopKTeacher,
    check_same_vocab,
    distill_loss,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    teacher_bytes_per_token,
    topk_forward_kl,
    topk_generalized_jsd,
    topk_reverse_kl,
    topk_teacher,
)

__all__ = [
    "TopKTeacher",
    "check_same_vocab",
    "distill_loss",
    "forward_kl",
    "generalized_jsd",
    "reverse_kl",
    "teacher_bytes_per_token",
    "topk_forward_kl",
    "topk_generalized_jsd",
    "topk_reverse_kl",
    "topk_teacher",
]
