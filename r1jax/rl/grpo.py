"""GRPO: group-relative advantages and the clipped policy loss, with the Dr. GRPO and DAPO variants.

Axis glossary: B prompts, G samples per prompt (the group), N = B*G sequences, T generated
tokens (padded), V vocabulary.

The objective is the token-level one of DeepSeekMath [S8 §4.1] that R1 trains with [S5 eqs. 1-3]:

    J = (1/G) Σ_i (1/|o_i|) Σ_t { min(ρ_it Â_i, clip(ρ_it, 1-ε, 1+ε) Â_i) - β D_KL,t },
    ρ_it = π_θ(o_it | q, o_i<t) / π_old(o_it | q, o_i<t),   Â_i = (r_i - mean(r)) / std(r),

with the k3 KL estimator per token. Variants (REFERENCE §3.4):
- Dr. GRPO: Â_i = r_i - mean(r) (`normalize_std=False`) and a constant token normaliser
  (`aggregation="dr_grpo"`).
- DAPO: clip-higher (`clip_eps_high`), token-level mean (`aggregation="token"`), dynamic sampling
  (`dynamic_sampling_mask`), soft overlong punishment (`overlong_penalty`) or overlong filtering
  (`overlong_filter_mask`).

Every function is pure jnp; `grpo_loss` returns the quantity to MINIMISE (-J).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from r1jax.nn.logprobs import token_logprobs  # noqa: F401  (part of this module's API)

Aggregation = Literal["grpo", "token", "dr_grpo"]


def _as_groups(values: jax.Array, group_size: int) -> jax.Array:
    """(B*G,) or (B, G) -> (B, G), checking that the group size fits."""
    if group_size < 2:
        raise ValueError(f"group_size={group_size} must be >= 2: a group of one has no baseline")
    if values.ndim == 2:
        if values.shape[1] != group_size:
            raise ValueError(f"rewards.shape={values.shape} must be (B, group_size={group_size})")
        return values
    if values.ndim != 1 or values.shape[0] % group_size:
        raise ValueError(
            f"rewards.shape={values.shape} must be (B*G,) with G=group_size={group_size}"
        )
    return values.reshape(-1, group_size)


def group_advantages(
    rewards: jax.Array, group_size: int, *, normalize_std: bool = True, eps: float = 1e-6
) -> jax.Array:
    """Outcome advantage of each sample relative to its group [S8 §4.1.2]; same shape as `rewards`.

    `rewards` is (B*G,) with the G samples of a prompt contiguous, or (B, G).
    normalize_std=True: (r - mean) / (std + eps)  (GRPO, DeepSeekMath / R1).
    normalize_std=False: r - mean                 (Dr. GRPO: /std up-weights near-solved and
                                                   near-failed prompts [Liu et al. 2025]).

    std is the SAMPLE standard deviation (Bessel, ddof=1). The papers only write "std"; the
    reference implementations use `torch.std`, whose default is unbiased: TRL's GRPOTrainer
    (`rewards.view(-1, G).std(dim=1)`) and verl's GRPO advantage. We match them so that learning
    rates and eps carry over. A group whose rewards are all equal gets advantage 0 (the eps keeps
    0/0 away); `dynamic_sampling_mask` drops such groups altogether.
    """
    grouped = _as_groups(rewards.astype(jnp.float32), group_size)  # (B, G)
    centered = grouped - grouped.mean(axis=1, keepdims=True)  # (B, G)
    if normalize_std:
        centered = centered / (grouped.std(axis=1, ddof=1, keepdims=True) + eps)  # (B, G)
    return centered.reshape(rewards.shape)


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token k3 estimator of KL(π_θ || π_ref) [S8 eq. 4; Schulman 2020 "Approximating KL"].

    exp(ref - logp) - (ref - logp) - 1: unbiased for the KL under samples from π_θ and >= 0 for
    every token (e^x >= 1 + x), unlike the plain log-ratio.
    """
    log_ratio = ref_logp - logp  # (N, T)
    return jnp.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    ref_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    kl_beta: float = 0.0,
    aggregation: Aggregation = "grpo",
    max_len_normalizer: int | None = None,
    normalizer: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped GRPO loss to minimise, and metrics.

    logp, old_logp, ref_logp: (N, T) log-probs of the generated tokens under the current,
        sampling and reference policies (only `logp` carries gradient).
    advantages: (N,) one per sequence (outcome reward, broadcast over its tokens) or (N, T).
    mask: (N, T) 1 for generated tokens, 0 for padding (and for dropped/filtered sequences).
    clip_eps, clip_eps_high: ρ is clipped to [1 - clip_eps, 1 + clip_eps_high]; clip_eps_high=None
        means symmetric (GRPO), DAPO's clip-higher uses 0.2 / 0.28.
    kl_beta: weight of the k3 KL to the reference policy (R1: 0.001, DeepSeekMath: 0.04, DAPO: 0).
    aggregation: how token losses become one scalar.
        "grpo":    mean over the tokens of each sequence, then mean over the sequences that have at
                   least one token [S8 eq. 3]. Sequences masked out entirely do not count, so
                   masking a group equals dropping it.
        "token":   sum over all tokens / number of tokens in the batch [DAPO §3.3].
        "dr_grpo": sum over all tokens / (N * max_len_normalizer) [Dr. GRPO]: a constant
                   denominator, so no length bias; N counts every row, masked or not.
    max_len_normalizer: the constant of "dr_grpo" (the maximum generation length); default T.
    normalizer: the aggregation's denominator, `aggregation_normalizer(mask_of_whole_batch, ...)`,
        when this call sees one microbatch of it: the microbatch losses (and gradients) then sum
        to the whole-batch ones exactly. Default: computed from this call's mask.
    """
    if aggregation not in ("grpo", "token", "dr_grpo"):
        raise ValueError(f"aggregation={aggregation!r} must be 'grpo', 'token' or 'dr_grpo'")
    if logp.ndim != 2 or not (logp.shape == old_logp.shape == ref_logp.shape == mask.shape):
        raise ValueError(
            f"logp, old_logp, ref_logp and mask must share one (N, T) shape, got {logp.shape=}, "
            f"{old_logp.shape=}, {ref_logp.shape=}, {mask.shape=}"
        )
    num_seqs, max_tokens = logp.shape
    if advantages.shape not in ((num_seqs,), (num_seqs, max_tokens)):
        raise ValueError(f"{advantages.shape=} must be (N,) or (N, T) for {logp.shape=}")
    eps_low = clip_eps
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high

    logp = logp.astype(jnp.float32)
    old_logp = jax.lax.stop_gradient(old_logp.astype(jnp.float32))
    ref_logp = jax.lax.stop_gradient(ref_logp.astype(jnp.float32))
    adv = jax.lax.stop_gradient(advantages.astype(jnp.float32))
    adv = jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, logp.shape)  # (N, T)
    mask = mask.astype(jnp.float32)  # (N, T)
    # Padding may hold anything (-inf log-probs included); give it log-ratios of 0 so that no
    # inf or nan reaches the sums or the gradient through `* mask`.
    logp, old_logp, ref_logp = (jnp.where(mask > 0, x, 0.0) for x in (logp, old_logp, ref_logp))

    # PPO clipped surrogate per token [S8 eq. 3]: the min makes it a pessimistic bound, so the
    # gradient vanishes once ρ has moved past the clip edge in the direction that A rewards.
    ratio = jnp.exp(logp - old_logp)  # (N, T)
    clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)  # (N, T)
    surrogate = jnp.minimum(ratio * adv, clipped_ratio * adv)  # (N, T)
    kl = k3_kl(logp, ref_logp)  # (N, T)
    # KL enters the loss, not the reward [S8 §4.1.1], so it does not scale with the advantage.
    token_loss = -(surrogate - kl_beta * kl)  # (N, T)

    if normalizer is None:
        normalizer = aggregation_normalizer(mask, aggregation, max_len_normalizer)
    tokens_per_seq = mask.sum(axis=1)  # (N,)
    total_tokens = jnp.maximum(tokens_per_seq.sum(), 1.0)
    if aggregation == "grpo":
        # Per-sequence token means; empty sequences give 0 and are not counted by the normaliser.
        seq_loss = (token_loss * mask).sum(axis=1) / jnp.maximum(tokens_per_seq, 1.0)  # (N,)
        loss = seq_loss.sum() / normalizer
    else:
        loss = (token_loss * mask).sum() / normalizer

    def token_mean(x):
        return (x * mask).sum() / total_tokens

    # A token is "clipped" when the clipped branch wins the min, i.e. its gradient is cut.
    clipped_high = (ratio > 1.0 + eps_high) & (adv > 0)  # (N, T)
    clipped_low = (ratio < 1.0 - eps_low) & (adv < 0)  # (N, T)
    metrics = {
        "loss": loss,
        "pg_loss": token_mean(-surrogate),
        "kl": token_mean(kl),
        "clip_fraction": token_mean((clipped_high | clipped_low).astype(jnp.float32)),
        "clip_fraction_high": token_mean(clipped_high.astype(jnp.float32)),
        "clip_fraction_low": token_mean(clipped_low.astype(jnp.float32)),
        "ratio_mean": token_mean(ratio),
        "ratio_max": jnp.max(jnp.where(mask > 0, ratio, -jnp.inf)),
        "num_tokens": tokens_per_seq.sum(),
    }
    return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def aggregation_normalizer(
    mask: jax.Array, aggregation: Aggregation, max_len_normalizer: int | None = None
) -> jax.Array:
    """Denominator of `grpo_loss`'s aggregation for a (N, T) mask: sequences with at least one
    token ("grpo"), tokens ("token"), or N * max_len_normalizer (default T) ("dr_grpo")."""
    if aggregation not in ("grpo", "token", "dr_grpo"):
        raise ValueError(f"aggregation={aggregation!r} must be 'grpo', 'token' or 'dr_grpo'")
    mask = mask.astype(jnp.float32)  # (N, T)
    if aggregation == "grpo":
        return jnp.maximum((mask.sum(axis=1) > 0).sum().astype(jnp.float32), 1.0)
    if aggregation == "token":
        return jnp.maximum(mask.sum(), 1.0)
    num_seqs, max_tokens = mask.shape
    max_len = max_tokens if max_len_normalizer is None else max_len_normalizer
    return jnp.asarray(num_seqs * max_len, jnp.float32)


# ----------------------------------------------------------------------------- DAPO helpers


def dynamic_sampling_mask(rewards: jax.Array, group_size: int) -> jax.Array:
    """Keep-mask (shape of `rewards`) dropping the groups whose rewards are all equal [DAPO §3.2].

    Such groups have zero advantage and only dilute the batch. DAPO over-samples and refills the
    batch; a fixed-shape jitted step instead multiplies this mask into the token mask.
    """
    grouped = _as_groups(rewards, group_size)  # (B, G)
    informative = grouped.max(axis=1) > grouped.min(axis=1)  # (B,)
    return jnp.broadcast_to(informative[:, None], grouped.shape).reshape(rewards.shape)


def overlong_penalty(lengths: jax.Array, max_len: int, cache_len: int) -> jax.Array:
    """DAPO soft overlong punishment R_length(|y|) [DAPO §3.4], added to the task reward.

    0 for |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache inside the cache zone (a
    linear ramp from 0 to -1); -1 beyond L_max. DAPO uses L_max = 20480, L_cache = 4096.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"cache_len={cache_len} must be in (0, max_len={max_len}]")
    lengths = lengths.astype(jnp.float32)
    free_len = max_len - cache_len
    ramp = (free_len - lengths) / cache_len
    return jnp.where(lengths <= free_len, 0.0, jnp.where(lengths <= max_len, ramp, -1.0))


def overlong_filter_mask(
    lengths: jax.Array, max_len: int, finished: jax.Array | None = None
) -> jax.Array:
    """Keep-mask (N,) that drops truncated samples from the loss (DAPO "overlong filtering").

    A sample is truncated when it was cut at max_len; pass `finished` (ended with EOS) when known,
    since a sample can end with EOS exactly at max_len. Multiply into the token mask.
    """
    if finished is not None:
        return finished.astype(bool)
    return lengths < max_len
