"""How far a student is from its teacher: KL(p_teacher || p_student) per completion token on
held-out problems written out with their reference solutions (the quantity forward-KL
distillation minimises, measured on prompts neither model trained on)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from r1jax import models
from r1jax.data.pipeline import sft_features
from r1jax.distill.losses import check_same_vocab, forward_kl


@functools.partial(jax.jit, static_argnames=("student_cfg", "teacher_cfg"))
def _kl(student_cfg, student_params, teacher_cfg, teacher_params, batch):
    def logits(cfg, params):
        seg = batch["segment_ids"]
        out, _ = models.forward(cfg, params, batch["inputs"], positions=batch["positions"],
                                attention_mask=seg > 0, segment_ids=seg, with_mtp=False)
        return out  # (B, T, V)

    return forward_kl(logits(student_cfg, student_params), logits(teacher_cfg, teacher_params),
                      batch["loss_mask"])


def heldout_teacher_kl(student_cfg, student_params, teacher_cfg, teacher_params, tok,
                       problems: list[dict], *, seq_len: int = 128) -> float:
    """Mean forward KL in nats per completion token (temperature 1, all V logits)."""
    check_same_vocab(student_cfg.vocab_size, teacher_cfg.vocab_size)
    rows = [sft_features(tok, ex, seq_len) for ex in problems]
    batch = {key: np.stack([r[key] for r in rows]) for key in rows[0]}  # each (B, T)
    return float(_kl(student_cfg, student_params, teacher_cfg, teacher_params, batch))
