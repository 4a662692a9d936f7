"""Speculative decoding with the MTP module as drafter [V3 §5.4.3]: 1 or 2 tokens per step.

DeepSeek-V3 keeps its multi-token-prediction module at inference to draft the token after next;
the main model verifies the draft in the same forward that produces the next token (the paper
reports 85-90% acceptance of the second token and 1.8x tokens/s). Each step, per row, with x_i the
last accepted token (not yet in the cache) at position i and d the draft of x_{i+1}:

  1. main model on [x_i, d] at positions [i, i+1] (2 cache slots): logits p_i and p_{i+1};
  2. verify d against p_i: greedy accepts iff d = argmax p_i; sampling accepts with probability
     min(1, p_i(d) / q(d)) and otherwise draws from normalize(max(0, p_i - q)) (Leviathan et al.
     2023, Chen et al. 2023), so x_{i+1} is distributed exactly as p_i whatever q is. p and q are
     the filtered distributions (temperature, top-k, top-p) the plain sampler would draw from;
  3. accepted: x_{i+2} is chosen from p_{i+1} as well (2 tokens this step);
  4. the MTP module drafts the next d from the main model's h of the new last position and the
     embedding of the token it predicts after, the way it was trained (`mtp_logits`).

Cache layout: the main and the MTP latent caches share slots. A slot holds position i in both: the
main model's keys of x_i, the MTP block's keys of its input at i, [emb x_{i+1}; h_i]. A step writes
2 slots; the draft's slot is kept iff the draft is accepted. A rejected draft leaves a hole:
attention masks it by key_valid and RoPE uses explicit positions, so x_{i+1} simply takes position
i+1 in the next step's slot. After the first token (chosen from the prefill) every step yields at
least one, so S = P + 2N slots suffice. As in plain decoding, the steps run in segments on caches
of growing live length (`decode_segments` with 2 slots a step; both caches grow together), so
early steps attend over the slots written so far, not all P + 2N.

Returned tokens, logprobs (temperature 1, unfiltered: a forward pass over the finished sequence
gives the same), mask and lengths are those of `sampling.sample`; drafts_proposed and
drafts_accepted (R,) count verified drafts and accepted ones per row.

Axis glossary: R = B*G rows, P prompt length, N new tokens, V vocab, S cache slots.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax import models
from r1jax.rollout.decoding import (SamplingConfig, choose_tokens, decode_segments,
                                    draw_categorical, filter_logits, first_argmax, grow_cache,
                                    prefill, token_logprobs)


def accept_or_resample(p_logits: jax.Array, q_logits: jax.Array, draft: jax.Array,
                       key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Speculative sampling's verification of draft ~ q against target p.

    p_logits, q_logits (R, V) filtered logits (-inf outside the kept set); draft (R,) drawn from
    softmax(q_logits). Returns (token (R,) int32, accepted (R,) bool): the draft with probability
    min(1, p(d)/q(d)), else a draw from normalize(max(0, p - q)); the token is distributed as p.
    """
    p = jax.nn.softmax(p_logits, axis=-1)  # (R, V)
    q = jax.nn.softmax(q_logits, axis=-1)
    accept_key, residual_key = jax.random.split(key)
    p_d = jnp.take_along_axis(p, draft[:, None], -1)[:, 0]  # (R,)
    q_d = jnp.take_along_axis(q, draft[:, None], -1)[:, 0]
    # u < p(d)/q(d), multiplied out: q(d) > 0 for a draft drawn from q.
    accepted = jax.random.uniform(accept_key, draft.shape) * q_d < p_d
    residual = jnp.maximum(p - q, 0.0)  # (R, V)
    # p == q leaves no residual, but then every draft is accepted: fall back to p to stay finite.
    residual = jnp.where(residual.sum(-1, keepdims=True) > 0, residual, p)
    resampled = draw_categorical(residual_key, jnp.log(residual))
    return jnp.where(accepted, draft, resampled), accepted


def sample_speculative(cfg, scfg: SamplingConfig, params: dict, prompt_tokens: jax.Array,
                       prompt_mask: jax.Array, rng: jax.Array, temperature, top_p) -> dict:
    """`sampling.sample` with MTP drafts (scfg.draft == "mtp"); temperature and top_p traced."""
    models.check_has_mtp(cfg)
    return _sample_speculative(cfg, scfg, params, prompt_tokens, prompt_mask, rng, temperature,
                               top_p)


@functools.partial(jax.jit, static_argnames=("cfg", "scfg"))
def _sample_speculative(cfg, scfg: SamplingConfig, params: dict, prompt_tokens: jax.Array,
                        prompt_mask: jax.Array, rng: jax.Array, temperature: jax.Array,
                        top_p: jax.Array) -> dict:
    n, p = scfg.max_new_tokens, prompt_tokens.shape[1]
    segments = decode_segments(p, n, scfg.decode_buckets, slots_per_step=2)  # ((live, end), ..)
    stop_ids = jnp.asarray(scfg.stop_ids or (-1,), jnp.int32)

    def filtered(logits):
        return filter_logits(logits, temperature=temperature, top_p=top_p, top_k=scfg.top_k)

    def draw_draft(mtp_logits, key):  # (R, V) -> draft (R,), its filtered logits q (R, V)
        if scfg.greedy:  # greedy verification never reads q
            return first_argmax(mtp_logits), mtp_logits
        q_logits = filtered(mtp_logits)
        return draw_categorical(key, q_logits), q_logits

    # ---------------------------------------------------------------- prefill
    prefill_key, loop_key = jax.random.split(rng)
    first_key, draft_key = jax.random.split(prefill_key)
    tokens, mask, positions, logits, aux = prefill(cfg, params, prompt_tokens, prompt_mask,
                                                   scfg.num_samples, segments[0][0])
    rows = tokens.shape[0]
    first = choose_tokens(logits[:, -1], first_key, scfg, temperature, top_p)  # (R,)
    toks = jnp.zeros((rows, n), jnp.int32).at[:, 0].set(first)
    logps = jnp.zeros((rows, n), jnp.float32).at[:, 0].set(token_logprobs(logits[:, -1], first))
    # The MTP input at prompt position i is [emb x_{i+1}; h_i]; after the last prompt token comes
    # the token just chosen.
    next_tokens = jnp.concatenate([tokens[:, 1:], first[:, None]], axis=1)  # (R, P)
    mtp_cache = models.init_mtp_cache(cfg, rows, segments[0][0], jnp.dtype(cfg.dtype))
    mtp_logits, mtp_cache = models.mtp_draft(cfg, params, next_tokens, aux["hidden"],
                                             positions=positions, attention_mask=mask,
                                             cache=mtp_cache)
    draft, q_logits = draw_draft(mtp_logits[:, -1], draft_key)
    count = jnp.ones((rows,), jnp.int32)  # tokens emitted per row
    done = jnp.isin(first, stop_ids) | (count >= n)

    # ---------------------------------------------------------------- step
    step_keys = jax.random.split(loop_key, n)
    row_ids = jnp.arange(rows)

    def body(carry):
        (step, cache, mtp_cache, last, pos, draft, q_logits, count, done, toks, logps,
         proposed, accepted) = carry
        verify_key, bonus_key, draft_key = jax.random.split(step_keys[step], 3)
        alive = ~done
        fed = jnp.where(alive[:, None], jnp.stack([last, draft], axis=1), 0)  # (R, 2)
        fed_pos = pos[:, None] + jnp.arange(2)  # (R, 2)
        fed_mask = jnp.broadcast_to(alive[:, None], (rows, 2))
        slot = cache["index"]
        logits, aux = models.forward(cfg, params, fed, positions=fed_pos, attention_mask=fed_mask,
                                     cache=cache, with_mtp=False)  # (R, 2, V)
        if scfg.greedy:
            x1, x2 = jnp.unstack(first_argmax(logits), axis=1)
            ok = x1 == draft
        else:
            p_logits = filtered(logits)  # (R, 2, V): both positions filtered at once
            x1, ok = accept_or_resample(p_logits[:, 0], q_logits, draft, verify_key)
            x2 = draw_categorical(bonus_key, p_logits[:, 1])
        ok = ok & alive  # x2, drawn from p_{i+1}, counts only after an accepted draft
        # The draft's slot stays only where the draft became x_{i+1}.
        cache = {**aux["cache"], "key_valid": jax.lax.dynamic_update_slice_in_dim(
            aux["cache"]["key_valid"], ok[:, None], slot + 1, axis=1)}

        # Emit x1, then x2 if accepted, unless x1 stopped the row or N is reached. Columns past
        # N drop the write (scatter mode="drop"), so finished rows write nothing.
        stopped = jnp.isin(x1, stop_ids)
        emit2 = ok & ~stopped & (count + 1 < n)
        col1 = jnp.where(alive, count, n)
        col2 = jnp.where(emit2, count + 1, n)
        toks = toks.at[row_ids, col1].set(x1, mode="drop").at[row_ids, col2].set(x2, mode="drop")
        logps = (logps.at[row_ids, col1].set(token_logprobs(logits[:, 0], x1), mode="drop")
                 .at[row_ids, col2].set(token_logprobs(logits[:, 1], x2), mode="drop"))
        count = count + alive + emit2
        done = done | stopped | (emit2 & jnp.isin(x2, stop_ids)) | (count >= n)

        # Draft the next token from the new last position: i+1 (accepted) or i (rejected).
        mtp_in = jnp.stack([x1, jnp.where(ok, x2, 0)], axis=1)  # (R, 2) tokens i+1, i+2
        mtp_mask = jnp.stack([alive, ok], axis=1)
        mtp_logits, mtp_cache = models.mtp_draft(cfg, params, mtp_in, aux["hidden"],
                                                 positions=fed_pos, attention_mask=mtp_mask,
                                                 cache=mtp_cache)  # (R, 2, V)
        draft, q_logits = draw_draft(jnp.where(ok[:, None], mtp_logits[:, 1], mtp_logits[:, 0]),
                                     draft_key)
        last = jnp.where(ok, x2, x1)
        pos = pos + 1 + ok
        return (step + 1, cache, mtp_cache, last, pos, draft, q_logits, count, done, toks, logps,
                proposed + alive, accepted + ok)

    def running(end, carry):  # a segment ends at its last step, or once every row has stopped
        step, done = carry[0], carry[8]
        return (step < end) & ~jnp.all(done)

    # ---------------------------------------------------------------- loop
    zeros = jnp.zeros((rows,), jnp.int32)
    cache = models.with_decode_weights(cfg, params, aux["cache"])  # once, not every step
    mtp_cache = models.with_mtp_decode_weights(cfg, params, mtp_cache)
    init = (jnp.zeros((), jnp.int32), cache, mtp_cache, first, positions[:, -1] + 1, draft,
            q_logits, count, done, toks, logps, zeros, zeros)
    out = init
    for live, end in segments:  # once every row has stopped, later segments run no step
        step, cache, mtp_cache, *rest = out
        out = (step, grow_cache(cfg, cache, live),
               grow_cache(cfg, mtp_cache, live, models.init_mtp_cache), *rest)
        out = jax.lax.while_loop(functools.partial(running, end), body, out)
    count, toks, logps, proposed, accepted = out[7], out[9], out[10], out[11], out[12]
    return {"tokens": toks, "logprobs": logps, "mask": jnp.arange(n)[None, :] < count[:, None],
            "lengths": count, "drafts_proposed": proposed, "drafts_accepted": accepted}
