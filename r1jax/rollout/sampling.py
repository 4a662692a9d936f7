"""Batched sampling on the compressed MLA cache: prefill once, then decode token by token.

Axis glossary: B prompts, G samples per prompt, P prompt length (left-padded), N new tokens,
V vocab. Everything is jitted with static P and N; call it under a mesh and the batch and params
shard like a train step. Temperature and top-p are traced values, not compile-time constants, so
evaluation (T=0.6), rollouts (T=1.0, 0.7) and rejection sampling of the same shapes share one
compiled sampler.

Decode steps attend over the live part of the cache only: the N steps run as up to
K = `decode_buckets` while loops (segments), each on a cache of static length (`decode_segments`)
that holds the slots written so far and the segment's own, so the steps of segment k attend over
P + N * k / K slots (rounded up to a multiple of 8) instead of all P + N; the prefill fills the
first segment's cache. Between segments the cache grows into a larger one (one copy each). Growing, not slicing one full-length cache: XLA:CPU copied the whole
cache every step to read a prefix of a buffer that the same step updates in place.

Returned logprobs are the model's own log-softmax of each sampled token (temperature 1, no
top-p/top-k), i.e. exactly what a forward pass over the finished sequence gives: GRPO uses them
as the behaviour policy pi_old.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import models
from r1jax.config import ModelConfig
from r1jax.field_checks import at_least, between, check_fields, positive


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    greedy: bool = False
    num_samples: int = 1  # G samples per prompt
    stop_ids: tuple[int, ...] = ()  # generation of a row ends after any of these (e.g. EOS)
    decode_buckets: int = 4  # K decode segments of growing live length; 1 = all P + N slots

    def __post_init__(self):
        check_fields(self, max_new_tokens=at_least(1), temperature=positive(),
                     top_p=between(0, 1, include_low=False), top_k=at_least(0),
                     num_samples=at_least(1), decode_buckets=at_least(1))


LIVE_LENGTH_MULTIPLE = 8  # live lengths round up to whole vector registers / TPU sublanes


def decode_segments(prompt_len: int, new_tokens: int, buckets: int) -> tuple[tuple[int, int], ...]:
    """((live_len, end_step), ...): decode steps [previous end_step, end_step) run on a cache of
    live_len slots. Step s writes slot P + s, so it needs live_len >= P + s + 1.

    Live lengths are P + ceil(N * k / K) for k = 1..K, rounded up to a multiple of 8 (the last is
    P + N exactly), duplicates dropped. Quarters (K = 4) over powers of two: each segment is
    another copy of the decode step in the compiled program, so K bounds the compile time, while
    the attended slots fall to P + N (K + 1) / (2K) per step on average, 3/4 of what
    one-live-length-per-step (P + N / 2) would save."""
    total = prompt_len + new_tokens
    segments = []
    for k in range(1, buckets + 1):
        live = prompt_len + -(-new_tokens * k // buckets)
        live = min(total, -(-live // LIVE_LENGTH_MULTIPLE) * LIVE_LENGTH_MULTIPLE)
        if not segments or live > segments[-1][0]:
            segments.append((live, live - prompt_len))
    return tuple(segments)


def grow_cache(cfg: ModelConfig, cache: dict, slots: int) -> dict:
    """`cache` copied into an empty one of `slots` slots: every buffer's slot axis is axis 1
    (models.init_cache of each architecture), the write index carries over."""
    rows, held = cache["key_valid"].shape
    if slots < held:
        raise ValueError(f"slots={slots} < {held}: a cache only grows")
    if slots == held:
        return cache
    empty = models.init_cache(cfg, rows, slots, jnp.dtype(cfg.dtype))

    def copy_into(empty_buffer, buffer):
        if empty_buffer.ndim == 0:  # the write index
            return buffer
        return jax.lax.dynamic_update_slice_in_dim(empty_buffer, buffer, 0, axis=1)

    return jax.tree.map(copy_into, empty, cache)


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


def sample(cfg: ModelConfig, scfg: SamplingConfig, params: dict, prompt_tokens: jax.Array,
           prompt_mask: jax.Array, rng: jax.Array) -> dict:
    """Sample G completions for each left-padded prompt.

    prompt_tokens, prompt_mask: (B, P). Returns (rows ordered prompt-major, B*G rows):
      tokens (B*G, N) int32, 0 after a row stopped; logprobs (B*G, N) float32;
      mask (B*G, N) bool, True for generated tokens (the stop token included);
      lengths (B*G,) int32.
    """
    # Only what shapes the program is static: one compiled sampler for every temperature/top-p.
    shape = dataclasses.replace(scfg, temperature=1.0, top_p=1.0)
    return _sample(cfg, shape, params, prompt_tokens, prompt_mask, rng,
                   np.float32(scfg.temperature), np.float32(scfg.top_p))


@functools.partial(jax.jit, static_argnames=("cfg", "scfg"))
def _sample(cfg: ModelConfig, scfg: SamplingConfig, params: dict, prompt_tokens: jax.Array,
            prompt_mask: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array) -> dict:
    g, n = scfg.num_samples, scfg.max_new_tokens
    tokens = jnp.repeat(prompt_tokens, g, axis=0)  # (B*G, P)
    mask = jnp.repeat(prompt_mask.astype(jnp.bool_), g, axis=0)
    rows, p = tokens.shape
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    segments = decode_segments(p, n, scfg.decode_buckets)  # ((live_len, end_step), ...)
    cache = models.init_cache(cfg, rows, segments[0][0], jnp.dtype(cfg.dtype))
    logits, aux = models.forward(cfg, params, tokens, positions=positions, attention_mask=mask,
                                 cache=cache, with_mtp=False)
    next_pos = positions[:, -1] + 1  # (B*G,)
    stop_ids = jnp.asarray(scfg.stop_ids or (-1,), jnp.int32)

    def choose(logits, key):
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B*G, V)
        if scfg.greedy:
            tok = jnp.argmax(logits, axis=-1)
        else:
            filtered = filter_logits(logits, temperature=temperature, top_p=top_p,
                                     top_k=scfg.top_k)
            tok = jax.random.categorical(key, filtered, axis=-1)
        return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], -1)[:, 0]

    keys = jax.random.split(rng, n)

    def body(carry):
        step, last_logits, cache, pos, done, toks, logps, alive_steps = carry
        tok, logp = choose(last_logits, keys[step])
        alive = ~done
        tok = jnp.where(alive, tok, 0)
        logits, aux = models.forward(cfg, params, tok[:, None], positions=pos[:, None],
                                     attention_mask=alive[:, None], cache=cache, with_mtp=False)
        done = done | jnp.isin(tok, stop_ids)
        # Written in place: the (B*G, N) outputs and each layer's cache buffer are loop carries.
        toks = jax.lax.dynamic_update_slice_in_dim(toks, tok[:, None], step, axis=1)
        logps = jax.lax.dynamic_update_slice_in_dim(
            logps, jnp.where(alive, logp, 0.0)[:, None], step, axis=1)
        alive_steps = jax.lax.dynamic_update_slice_in_dim(alive_steps, alive[:, None], step, axis=1)
        return step + 1, logits[:, -1], aux["cache"], pos + 1, done, toks, logps, alive_steps

    def running(end, carry):  # a segment ends at its last step, or once every row has stopped
        step, done = carry[0], carry[4]
        return (step < end) & ~jnp.all(done)

    # Rows that stopped (and steps never run) hold token 0, logprob 0, mask False.
    carry = (jnp.zeros((), jnp.int32), logits[:, -1], aux["cache"], next_pos,
             jnp.zeros((rows,), jnp.bool_), jnp.zeros((rows, n), jnp.int32),
             jnp.zeros((rows, n), jnp.float32), jnp.zeros((rows, n), jnp.bool_))
    # Once every row has stopped, each later segment's first test fails: no step runs.
    for live, end in segments:
        step, last_logits, cache, *rest = carry
        carry = (step, last_logits, grow_cache(cfg, cache, live), *rest)
        carry = jax.lax.while_loop(functools.partial(running, end), body, carry)
    *_, toks, logps, alive = carry  # each (B*G, N)
    return {"tokens": toks, "logprobs": logps, "mask": alive,
            "lengths": alive.sum(axis=1).astype(jnp.int32)}

