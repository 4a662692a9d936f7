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
first segment's cache. Between segments the cache grows into a larger one (one copy each).
Growing, not slicing one full-length cache: XLA:CPU copied the whole cache every step to read a
prefix of a buffer that the same step updates in place.

Returned logprobs are the model's own log-softmax of each sampled token (temperature 1, no
top-p/top-k), i.e. exactly what a forward pass over the finished sequence gives: GRPO uses them
as the behaviour policy pi_old.

With `SamplingConfig.draft="mtp"` the same call decodes speculatively: the model's MTP module
drafts and the main model verifies, 1 or 2 tokens per step (r1jax/rollout/speculative.py).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import models
from r1jax.config import ModelConfig
from r1jax.rollout.decoding import (SamplingConfig, choose_tokens, decode_segments, filter_logits,
                                    grow_cache, prefill, token_logprobs)
from r1jax.rollout.speculative import sample_speculative

__all__ = ["SamplingConfig", "decode_segments", "filter_logits", "grow_cache", "sample"]

def sample(cfg: ModelConfig, scfg: SamplingConfig, params: dict, prompt_tokens: jax.Array,
           prompt_mask: jax.Array, rng: jax.Array) -> dict:
    """Sample G completions for each left-padded prompt.

    prompt_tokens, prompt_mask: (B, P). Returns (rows ordered prompt-major, B*G rows):
      tokens (B*G, N) int32, 0 after a row stopped; logprobs (B*G, N) float32;
      mask (B*G, N) bool, True for generated tokens (the stop token included);
      lengths (B*G,) int32.
    With draft="mtp" also drafts_proposed and drafts_accepted (B*G,) int32.
    """
    # Only what shapes the program is static: one compiled sampler for every temperature/top-p.
    shape = dataclasses.replace(scfg, temperature=1.0, top_p=1.0)
    if scfg.draft == "mtp":
        return sample_speculative(cfg, shape, params, prompt_tokens, prompt_mask, rng,
                                  np.float32(scfg.temperature), np.float32(scfg.top_p))
    return _sample(cfg, shape, params, prompt_tokens, prompt_mask, rng,
                   np.float32(scfg.temperature), np.float32(scfg.top_p))


@functools.partial(jax.jit, static_argnames=("cfg", "scfg"))
def _sample(cfg: ModelConfig, scfg: SamplingConfig, params: dict, prompt_tokens: jax.Array,
            prompt_mask: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array) -> dict:
    n = scfg.max_new_tokens
    segments = decode_segments(prompt_tokens.shape[1], n, scfg.decode_buckets)  # ((live, end), ..)
    tokens, _, positions, logits, aux = prefill(cfg, params, prompt_tokens, prompt_mask,
                                                scfg.num_samples, segments[0][0])
    rows = tokens.shape[0]
    next_pos = positions[:, -1] + 1  # (B*G,)
    stop_ids = jnp.asarray(scfg.stop_ids or (-1,), jnp.int32)
    keys = jax.random.split(rng, n)

    def body(carry):
        step, last_logits, cache, pos, done, toks, logps, alive_steps = carry
        tok = choose_tokens(last_logits, keys[step], scfg, temperature, top_p)
        logp = token_logprobs(last_logits, tok)
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
    cache = models.with_decode_weights(cfg, params, aux["cache"])  # once, not every step
    carry = (jnp.zeros((), jnp.int32), logits[:, -1], cache, next_pos,
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

