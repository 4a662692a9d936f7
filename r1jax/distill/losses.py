"""Logit distillation: forward KL, reverse KL and generalized JSD, on full or top-k teacher logits.

Axis glossary: N sequences, T tokens, V vocabulary, K teacher top-k.

Conventions (p_T teacher, p_S student, both at temperature τ: softmax(logits / τ)):
- forward_kl      KL(p_T || p_S) = Σ_v p_T (log p_T - log p_S): mode-covering, the classic
                  distillation loss [Hinton et al. 2015].
- reverse_kl      KL(p_S || p_T): mode-seeking [MiniLLM, Gu et al. 2024].
- generalized_jsd JSD_β = β KL(p_T || m) + (1-β) KL(p_S || m), m = β p_T + (1-β) p_S, the GKD
                  convention [GKD, Agarwal et al. 2024; TRL `generalized_jsd_loss`].
                  JSD_β -> 0 at both ends, but JSD_β / β -> KL(p_T || p_S) as β -> 0 and
                  JSD_β / (1-β) -> KL(p_S || p_T) as β -> 1. Like TRL we return those limits AT the
                  endpoints: β=0 gives forward KL, β=1 reverse KL (so the scale jumps there).
- Every divergence is multiplied by τ² so that its gradient keeps the same scale as τ changes
  [Hinton et al. 2015 §2], then averaged over the unmasked tokens.
- The teacher is a constant (stop_gradient); all math runs in float32.

Top-k teacher. Storing the teacher's top-k log-probs and ids costs K*(4+4) bytes per token
(fp32 + int32), plus 4 for the log of the mass outside the top-k, instead of V*4 (fp32) or V*2
(bf16): for V=129,280 and K=64, 516 B instead of 517,120 B / 258,560 B (a 32K-token sample:
17 MB instead of 8.5 GB in bf16). We keep the teacher's exact top-k probabilities and lump
everything else into one "rest" bucket; the student gets the same K+1 buckets (its probabilities
at the teacher's ids, plus all the rest). The loss is then the exact divergence between the two
coarse-grained (K+1)-outcome distributions: a lower bound of the full one (data processing
inequality), with nothing renormalised. For K = V there is no rest bucket and the loss is the
full loss, the same fp32 numbers.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Kind = Literal["forward_kl", "reverse_kl", "jsd"]

# Stands in for log 0: exp() of it is exactly 0 and it stays finite in sums and gradients.
_LOG_ZERO = -1e30
_LOG_TINY = math.log(np.finfo(np.float32).tiny)


class TopKTeacher(NamedTuple):
    """The teacher's K most likely tokens per position, at the distillation temperature."""

    logprobs: jax.Array  # (N, T, K) float32 log p_T, sorted descending
    ids: jax.Array  # (N, T, K) int32
    # (N, T) float32 log of the mass outside the top-k, from all V logits (-inf when K = V).
    # 1 - Σ_topk p_T from the stored fp32 log-probs is only known to ~1e-7 absolute, which is the
    # whole rest mass of a confident teacher; reverse KL and JSD divide by it.
    rest_logprob: jax.Array


def check_same_vocab(student_vocab: int, teacher_vocab: int) -> None:
    """Logit distillation compares distributions token by token: one vocabulary for both."""
    if student_vocab != teacher_vocab:
        raise ValueError(
            f"student vocab_size={student_vocab} != teacher vocab_size={teacher_vocab}: logit "
            "distillation needs one shared tokenizer (use sequence-level SFT on teacher samples "
            "otherwise)"
        )


def teacher_bytes_per_token(vocab_size: int, k: int | None = None, *, logit_bytes: int = 4) -> int:
    """Teacher-target storage per token: K*(4+4) + 4 for top-k, else V*logit_bytes (4 or 2)."""
    return k * (4 + 4) + 4 if k is not None else vocab_size * logit_bytes


def topk_teacher(teacher_logits: jax.Array, k: int, *, temperature: float = 1.0) -> TopKTeacher:
    """Top-k of log softmax(teacher_logits / temperature): (N, T, V) -> TopKTeacher of (N, T, K).

    The temperature must be applied here, before truncation: the tempered normaliser needs all V
    logits. Pass the same temperature to the top-k losses.
    """
    vocab = teacher_logits.shape[-1]
    if not 0 < k <= vocab:
        raise ValueError(f"k={k} must be in [1, vocab_size={vocab}]")
    scaled = teacher_logits.astype(jnp.float32) / temperature  # (N, T, V)
    logp = jax.nn.log_softmax(scaled, axis=-1)  # (N, T, V)
    top_logp, top_ids = jax.lax.top_k(logp, k)  # (N, T, K)
    outside = jnp.put_along_axis(logp, top_ids, -jnp.inf, axis=-1, inplace=False)  # (N, T, V)
    rest_logp = jax.nn.logsumexp(outside, axis=-1)  # (N, T)
    return TopKTeacher(top_logp, top_ids.astype(jnp.int32), rest_logp)


# ----------------------------------------------------------------------------- divergences


def _kl(p_logp: jax.Array, q_logp: jax.Array) -> jax.Array:
    """KL(p || q) over the last axis; entries with p = 0 contribute 0 (0 log 0 = 0)."""
    p_logp, q_logp = jnp.maximum(p_logp, _LOG_ZERO), jnp.maximum(q_logp, _LOG_ZERO)
    return jnp.sum(jnp.exp(p_logp) * (p_logp - q_logp), axis=-1)


def _divergence(
    student_logp: jax.Array, teacher_logp: jax.Array, kind: Kind, beta: float
) -> jax.Array:
    """Per-position divergence over the last (support) axis: (..., S) -> (...)."""
    if kind == "forward_kl":
        return _kl(teacher_logp, student_logp)
    if kind == "reverse_kl":
        return _kl(student_logp, teacher_logp)
    if kind != "jsd":
        raise ValueError(f"kind={kind!r} must be 'forward_kl', 'reverse_kl' or 'jsd'")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    if beta == 0.0:  # the limit of JSD_β / β
        return _kl(teacher_logp, student_logp)
    if beta == 1.0:  # the limit of JSD_β / (1 - β)
        return _kl(student_logp, teacher_logp)
    teacher_logp = jnp.maximum(teacher_logp, _LOG_ZERO)
    student_logp = jnp.maximum(student_logp, _LOG_ZERO)
    # log m = log(β p_T + (1-β) p_S), in log space so tiny probabilities keep their precision.
    mixture_logp = jnp.logaddexp(math.log(beta) + teacher_logp, math.log1p(-beta) + student_logp)
    return beta * _kl(teacher_logp, mixture_logp) + (1.0 - beta) * _kl(student_logp, mixture_logp)


def _masked_token_mean(per_token: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)  # (N, T)
    return jnp.sum(per_token * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _full_logprobs(student_logits, teacher_logits, temperature):
    check_same_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
    student_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    teacher_logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    teacher_logp = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    return student_logp, teacher_logp  # (N, T, V) each


def _topk_logprobs(student_logits, teacher_topk: TopKTeacher, temperature):
    """Student and teacher log-probs on the K teacher tokens plus a "rest" bucket: (N, T, K[+1])."""
    vocab, k = student_logits.shape[-1], teacher_topk.ids.shape[-1]
    if k > vocab:
        raise ValueError(f"teacher top-k k={k} exceeds student vocab_size={vocab}")
    scaled = student_logits.astype(jnp.float32) / temperature  # (N, T, V)
    student_all = jax.nn.log_softmax(scaled, axis=-1)  # (N, T, V)
    teacher_top = jax.lax.stop_gradient(teacher_topk.logprobs.astype(jnp.float32))  # (N, T, K)
    if k == vocab:
        # The K buckets are the whole vocabulary: no rest bucket. Scatter the teacher back to
        # vocabulary order so the sums run in the same order as the full loss: the same numbers.
        teacher_all = jnp.put_along_axis(
            jnp.zeros_like(student_all), teacher_topk.ids, teacher_top, axis=-1, inplace=False
        )  # (N, T, V)
        return student_all, teacher_all
    student_top = jnp.take_along_axis(student_all, teacher_topk.ids, axis=-1)  # (N, T, K)
    # Student rest = logsumexp over the tokens outside the teacher's top-k (exact, no 1 - Σ).
    outside = jnp.put_along_axis(student_all, teacher_topk.ids, -jnp.inf, axis=-1, inplace=False)
    student_rest = jax.nn.logsumexp(outside, axis=-1, keepdims=True)  # (N, T, 1)
    # Floored so that a student putting mass where the teacher has none gets a large but finite
    # reverse KL (and gradient) rather than inf.
    teacher_rest = jnp.maximum(teacher_topk.rest_logprob.astype(jnp.float32), _LOG_TINY)[..., None]
    teacher_rest = jax.lax.stop_gradient(teacher_rest)  # (N, T, 1)
    return (
        jnp.concatenate([student_top, student_rest], axis=-1),
        jnp.concatenate([teacher_top, teacher_rest], axis=-1),
    )


def _loss(student_logp, teacher_logp, mask, kind, beta, temperature):
    per_token = _divergence(student_logp, teacher_logp, kind, beta)  # (N, T)
    return temperature**2 * _masked_token_mean(per_token, mask)


# ----------------------------------------------------------------------------- public losses


def forward_kl(student_logits, teacher_logits, mask, temperature: float = 1.0) -> jax.Array:
    """τ² · token-mean KL(p_T || p_S); logits (N, T, V), mask (N, T)."""
    s, t = _full_logprobs(student_logits, teacher_logits, temperature)
    return _loss(s, t, mask, "forward_kl", 0.0, temperature)


def reverse_kl(student_logits, teacher_logits, mask, temperature: float = 1.0) -> jax.Array:
    """τ² · token-mean KL(p_S || p_T); logits (N, T, V), mask (N, T)."""
    s, t = _full_logprobs(student_logits, teacher_logits, temperature)
    return _loss(s, t, mask, "reverse_kl", 0.0, temperature)


def generalized_jsd(
    student_logits, teacher_logits, mask, beta: float = 0.5, temperature: float = 1.0
) -> jax.Array:
    """τ² · token-mean JSD_β (GKD convention, see the module docstring for the endpoints)."""
    s, t = _full_logprobs(student_logits, teacher_logits, temperature)
    return _loss(s, t, mask, "jsd", beta, temperature)


def topk_forward_kl(
    student_logits, teacher_topk: TopKTeacher, mask, temperature: float = 1.0
) -> jax.Array:
    """forward_kl on the teacher's top-k plus a rest bucket; `teacher_topk` at `temperature`."""
    s, t = _topk_logprobs(student_logits, teacher_topk, temperature)
    return _loss(s, t, mask, "forward_kl", 0.0, temperature)


def topk_reverse_kl(
    student_logits, teacher_topk: TopKTeacher, mask, temperature: float = 1.0
) -> jax.Array:
    """reverse_kl on the teacher's top-k plus a rest bucket; `teacher_topk` at `temperature`."""
    s, t = _topk_logprobs(student_logits, teacher_topk, temperature)
    return _loss(s, t, mask, "reverse_kl", 0.0, temperature)


def topk_generalized_jsd(
    student_logits, teacher_topk: TopKTeacher, mask, beta: float = 0.5, temperature: float = 1.0
) -> jax.Array:
    """generalized_jsd on the teacher's top-k plus a rest bucket; teacher_topk at temperature."""
    s, t = _topk_logprobs(student_logits, teacher_topk, temperature)
    return _loss(s, t, mask, "jsd", beta, temperature)


def distill_loss(
    student_logits: jax.Array,
    teacher: jax.Array | TopKTeacher,
    mask: jax.Array,
    *,
    kind: Kind = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    hard_label_weight: float = 0.0,
    labels: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(1 - w) · soft + w · hard, to minimise [Hinton et al. 2015 §2].

    student_logits: (N, T, V). teacher: full logits (N, T, V) or a `TopKTeacher` made by
    `topk_teacher(..., temperature=temperature)`. soft: τ²-scaled `kind` divergence (β for "jsd").
    hard: token-mean cross-entropy of the student at τ = 1 against `labels` (N, T), weight
    w = hard_label_weight.
    """
    if not 0.0 <= hard_label_weight <= 1.0:
        raise ValueError(f"hard_label_weight={hard_label_weight} must be in [0, 1]")
    if isinstance(teacher, TopKTeacher):
        s, t = _topk_logprobs(student_logits, teacher, temperature)
    else:
        s, t = _full_logprobs(student_logits, teacher, temperature)
    soft = _loss(s, t, mask, kind, beta, temperature)
    metrics = {"soft_loss": soft}
    loss = soft
    if hard_label_weight > 0.0:
        if labels is None:
            raise ValueError(f"hard_label_weight={hard_label_weight} > 0 needs labels (N, T)")
        logits = student_logits.astype(jnp.float32)  # (N, T, V)
        label_logits = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]  # (N, T)
        hard = _masked_token_mean(jax.nn.logsumexp(logits, axis=-1) - label_logits, mask)
        loss = (1.0 - hard_label_weight) * soft + hard_label_weight * hard
        metrics["hard_loss"] = hard
    metrics["loss"] = loss
    return loss, jax.tree.map(jax.lax.stop_gradient, metrics)
