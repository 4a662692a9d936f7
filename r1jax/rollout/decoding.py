"""What the rollout layer's decoders share: the sampling options, the live-length segments of
the cache and its growth between them, the logits filter, the choice of a token, and the prefill
of left-padded prompts into the latent cache.

`r1jax/rollout/sampling.py` (one token per step) and `r1jax/rollout/speculative.py` (MTP drafts,
1 or 2 tokens per step) both build on these, so the two decoders choose tokens and report
logprobs by one definition.

Axis glossary: B prompts, G samples per prompt, R = B*G rows, P prompt length, S cache slots,
V vocab.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from r1jax import models
from r1jax.field_checks import at_least, between, check_fields, one_of, positive

# SamplingConfig.draft: "none" decodes one token per step; "mtp" lets the model's first MTP module
# draft the token after next and the main model verify it [V3 §5.4.3].
DRAFTS = ("none", "mtp")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    greedy: bool = False
    num_samples: int = 1  # G samples per prompt
    stop_ids: tuple[int, ...] = ()  # generation of a row ends after any of these (e.g. EOS)
    draft: str = "none"  # one of DRAFTS; "mtp" needs a DeepSeek-V3 config with MTP modules
    # Decoding in K segments of growing live cache length; 1 = all slots every step
    # (`decode_segments`; r1jax/rollout/sampling.py and speculative.py).
    decode_buckets: int = 4

    def __post_init__(self):
        check_fields(self, max_new_tokens=at_least(1), temperature=positive(),
                     top_p=between(0, 1, include_low=False), top_k=at_least(0),
                     num_samples=at_least(1), draft=one_of(*DRAFTS), decode_buckets=at_least(1))


LIVE_LENGTH_MULTIPLE = 8  # live lengths round up to whole vector registers / TPU sublanes


def decode_segments(prompt_len: int, new_tokens: int, buckets: int,
                    slots_per_step: int = 1) -> tuple[tuple[int, int], ...]:
    """((live_len, end_step), ...): decode steps [previous end_step, end_step) run on a cache of
    live_len slots. Step s writes slots P + W s .. P + W (s + 1) - 1 (W = `slots_per_step`: 1 for
    plain decoding, 2 for speculative), so it needs live_len >= P + W (s + 1).

    Live lengths are P + ceil(W N * k / K) for k = 1..K, rounded up to a multiple of 8 (the last
    is P + W N exactly), duplicates dropped. Quarters (K = 4) over powers of two: each segment is
    another copy of the decode step in the compiled program, so K bounds the compile time, while
    the attended slots fall to P + W N (K + 1) / (2K) per step on average, 3/4 of what
    one-live-length-per-step (P + W N / 2) would save."""
    written = slots_per_step * new_tokens
    segments = []
    for k in range(1, buckets + 1):
        live = prompt_len + -(-written * k // buckets)
        live = min(prompt_len + written, -(-live // LIVE_LENGTH_MULTIPLE) * LIVE_LENGTH_MULTIPLE)
        if not segments or live > segments[-1][0]:
            segments.append((live, (live - prompt_len) // slots_per_step))
    return tuple(segments)


def grow_cache(cfg, cache: dict, slots: int, init_cache=models.init_cache) -> dict:
    """`cache` copied into an empty one of `slots` slots (`init_cache`: models.init_cache of each
    architecture, or models.init_mtp_cache for the MTP block's; each buffer at the origin of its
    larger copy, whichever axis holds the slots), the write index carries over."""
    rows, held = cache["key_valid"].shape
    if slots < held:
        raise ValueError(f"slots={slots} < {held}: a cache only grows")
    if slots == held:
        return cache
    empty = init_cache(cfg, rows, slots, jnp.dtype(cfg.dtype))

    def copy_into(empty_buffer, buffer):
        if empty_buffer.ndim == 0:  # the write index
            return buffer
        return jax.lax.dynamic_update_slice(empty_buffer, buffer, (0,) * buffer.ndim)

    grown = jax.tree.map(copy_into, empty, {key: cache[key] for key in empty})
    return {**cache, **grown}  # entries without slots (models.with_decode_weights) carry over


def filter_logits(logits: jax.Array, *, temperature, top_p, top_k: int) -> jax.Array:
    """Temperature, then top-k, then nucleus (top-p): the smallest set of tokens whose
    probability reaches top_p keeps its logits, everything else gets -inf. (.., V) float32.
    temperature and top_p may be traced; top_p >= 1 skips the sort at run time."""
    logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)

    def nucleus(logits):
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
        keep_sorted = mass_before < top_p  # the first token is always kept
        threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        return jnp.where(logits < threshold, -jnp.inf, logits)

    return jax.lax.cond(top_p < 1.0, nucleus, lambda x: x, logits)


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log softmax(logits)[token], (R,), at temperature 1 without filters: what a forward pass
    over the finished sequence gives (GRPO's behaviour policy pi_old). logits (R, V)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (R, V)
    return jnp.take_along_axis(logp, tokens[:, None], -1)[:, 0]


def first_argmax(logits: jax.Array) -> jax.Array:
    """jnp.argmax over the last axis (the first maximum; the first NaN if any), int32.

    As a max and a min over positions: jnp.argmax reduces (value, index) pairs, which XLA:CPU
    runs as a scalar loop (a draw of 32 rows over a 1024-token vocab took ~15% of a Qwen2 small
    rollout step)."""
    top = jnp.max(logits, axis=-1, keepdims=True)  # NaN if any is NaN
    hit = (logits == top) | jnp.isnan(logits)
    positions = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.min(jnp.where(hit, positions, logits.shape[-1]), axis=-1)


def draw_categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
    """jax.random.categorical(key, logits, axis=-1) as int32: the same Gumbel noise added the
    same way, so the same draw, with the argmax of `first_argmax`."""
    return first_argmax(jax.random.gumbel(key, logits.shape, logits.dtype) + logits)


def choose_tokens(logits: jax.Array, key: jax.Array, scfg: SamplingConfig, temperature,
                  top_p) -> jax.Array:
    """Next tokens (R,) int32 from logits (R, V): argmax when greedy, else a draw from the
    filtered distribution (temperature, top-k, top-p)."""
    if scfg.greedy:
        return first_argmax(logits)
    filtered = filter_logits(logits, temperature=temperature, top_p=top_p, top_k=scfg.top_k)
    return draw_categorical(key, filtered)


def prefill(cfg, params: dict, prompt_tokens: jax.Array, prompt_mask: jax.Array,
            num_samples: int, cache_slots: int):
    """Each left-padded prompt (B, P) repeated G times, run into a fresh cache of `cache_slots`.

    Returns (tokens (R, P), mask (R, P) bool, positions (R, P), logits (R, P, V), aux): positions
    count real tokens only, so every row's next token sits at positions[:, -1] + 1."""
    tokens = jnp.repeat(prompt_tokens, num_samples, axis=0)  # (R, P)
    mask = jnp.repeat(prompt_mask.astype(jnp.bool_), num_samples, axis=0)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    cache = models.init_cache(cfg, tokens.shape[0], cache_slots, jnp.dtype(cfg.dtype))
    logits, aux = models.forward(cfg, params, tokens, positions=positions, attention_mask=mask,
                                 cache=cache, with_mtp=False)
    return tokens, mask, positions, logits, aux
