"""Distillation: logit losses (full and top-k teacher), `distill_step`, sequence distillation by
rejection sampling, and the held-out KL of a student to its teacher."""

from r1jax.distill.distill_step import distill_step_fn, teacher_topk_batch
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
from r1jax.distill.rejection import rejection_sample, write_sft_jsonl
from r1jax.distill.teacher_kl import heldout_teacher_kl

__all__ = [
    "TopKTeacher",
    "check_same_vocab",
    "distill_loss",
    "distill_step_fn",
    "forward_kl",
    "generalized_jsd",
    "heldout_teacher_kl",
    "rejection_sample",
    "reverse_kl",
    "teacher_bytes_per_token",
    "teacher_topk_batch",
    "topk_forward_kl",
    "topk_generalized_jsd",
    "topk_reverse_kl",
    "topk_teacher",
    "write_sft_jsonl",
]
