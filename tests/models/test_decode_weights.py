"""Weights a decode loop reads, derived once before it (`models.with_decode_weights`): the cached
forward gives the same bits with them as without, the sampler's cache keeps them through growth,
and the sampler's decode loop no longer copies kv_b into the absorbed layouts at every step."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config, models
from r1jax.models import qwen2
from r1jax.nn.mla import absorbed_weights
from r1jax.rollout.sampling import SamplingConfig, _sample, grow_cache
from r1jax.rollout.speculative import _sample_speculative


def test_absorbed_weights_are_kv_b_per_head():
    cfg = config.tiny()
    kv_b = np.asarray(models.init(cfg, jax.random.key(0))["layers"][0]["attn"]["kv_b"])  # (C, H, N+V)
    w_uk, w_uv = absorbed_weights(jnp.asarray(kv_b), cfg.qk_nope_head_dim)
    n = cfg.qk_nope_head_dim
    for h in range(cfg.num_heads):
        np.testing.assert_array_equal(np.asarray(w_uk[h]), kv_b[:, h, :n])  # (C, N)
        np.testing.assert_array_equal(np.asarray(w_uv[h]), kv_b[:, h, n:].T)  # (V, C)


@pytest.mark.parametrize("name", ["deepseek_v3", "qwen2"])
def test_cached_steps_give_the_same_bits_with_the_weights_computed_ahead(name):
    cfg = (config.tiny(num_layers=2, init_std=0.1) if name == "deepseek_v3"
           else qwen2.tiny())
    params = models.init(cfg, jax.random.key(0))
    b, t, prefill = 3, 12, 5
    tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
    step = jax.jit(lambda p, tok, c: models.forward(cfg, p, tok, cache=c, with_mtp=False))
    runs = []
    for ahead in (False, True):
        logits, aux = step(params, tokens[:, :prefill], models.init_cache(cfg, b, t))
        cache = models.with_decode_weights(cfg, params, aux["cache"]) if ahead else aux["cache"]
        pieces = [logits]
        for i in range(prefill, t):
            logits, aux = step(params, tokens[:, i:i + 1], cache)
            pieces.append(logits)
            cache = aux["cache"]
        assert ("absorbed" in cache) == (ahead and name == "deepseek_v3")  # kept step to step
        runs.append(np.concatenate([np.asarray(x) for x in pieces], axis=1))
    np.testing.assert_array_equal(runs[1], runs[0])


def test_mtp_drafts_give_the_same_logits_with_the_weights_computed_ahead():
    """Same math; unlike the main model's calls, the MTP block's are not bit-identical: given
    W_UK as an input, XLA:CPU no longer folds kv_b's transpose into the product and sums in
    another order (differences up to ~1e-6 on logits of order 1, float32 rounding)."""
    cfg = config.tiny(num_layers=2, init_std=0.1)
    params = models.init(cfg, jax.random.key(0))
    b, t, prefill = 3, 9, 4
    tokens = jax.random.randint(jax.random.key(1), (b, t + 1), 0, cfg.vocab_size)
    hidden = jax.random.normal(jax.random.key(2), (b, t, cfg.hidden_size))
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))

    def draft(cache, lo, hi):
        return models.mtp_draft(cfg, params, tokens[:, lo + 1:hi + 1], hidden[:, lo:hi],
                                positions=positions[:, lo:hi],
                                attention_mask=jnp.ones((b, hi - lo), jnp.bool_), cache=cache)
    draft = jax.jit(draft, static_argnums=(1, 2))
    runs = []
    for ahead in (False, True):
        logits, cache = draft(models.init_mtp_cache(cfg, b, t), 0, prefill)
        if ahead:
            cache = models.with_mtp_decode_weights(cfg, params, cache)
        pieces = [logits]
        for i in range(prefill, t, 2):  # 2 queries a call, as speculative decoding drafts
            logits, cache = draft(cache, i, min(i + 2, t))
            pieces.append(logits)
        assert ("absorbed" in cache) == ahead  # kept call to call
        runs.append(np.concatenate([np.asarray(x) for x in pieces], axis=1))
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5, atol=2e-6)


def test_a_grown_cache_keeps_the_weights_computed_ahead():
    cfg = config.tiny(num_layers=2)
    params = models.init(cfg, jax.random.key(0))
    cache = models.with_decode_weights(cfg, params, models.init_cache(cfg, 2, 8))
    grown = grow_cache(cfg, cache, 16)
    assert grown["c_kv"][0].shape == (2, 16, cfg.kv_lora_rank)
    assert grown["absorbed"] is cache["absorbed"]


def _while_bodies(hlo: str) -> str:
    """The text of every computation a while loop of `hlo` runs as its body."""
    bodies = set(re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", hlo))
    blocks = re.split(r"\n(?=\S)", hlo)  # computations start at column 0
    return "\n".join(b for b in blocks if re.match(r"%?([\w.\-]+) ", b)
                     and re.match(r"%?([\w.\-]+) ", b).group(1) in bodies)


@pytest.mark.parametrize("draft", ["none", "mtp"])
def test_the_decode_loop_reads_kv_b_without_copying_it(draft):
    """XLA:CPU turned the two per-head views of kv_b into copies inside the loop (layout
    assignment comes after loop-invariant code motion); computed ahead, the loop has none, the
    MTP block's included when it drafts."""
    cfg = config.tiny(num_layers=2)
    params = models.init(cfg, jax.random.key(0))
    prompt = jnp.ones((4, 8), jnp.int32)
    scfg = SamplingConfig(max_new_tokens=8, greedy=True, draft=draft)
    sampler = _sample_speculative if draft == "mtp" else _sample
    hlo = sampler.lower(cfg, scfg, params, prompt, jnp.ones_like(prompt), jax.random.key(0),
                        np.float32(1), np.float32(1)).compile().as_text()
    body = _while_bodies(hlo)
    assert "dot(" in body or "fusion(" in body, "no decode loop body found"
    h, c = cfg.num_heads, cfg.kv_lora_rank
    n, v = cfg.qk_nope_head_dim, cfg.v_head_dim
    per_head = {f"f32[{h},{c},{n}]", f"f32[{h},{v},{c}]"}  # W_UK (H, C, N), W_UV (H, V, C)
    # a copy of one loop-invariant operand (the loop's params arrive as tuple elements)
    copy = re.compile(r"= (f32\[[\d,]+\])\S* (?:fusion|copy|transpose)\(%get-tuple-element[\d.]*\)")
    copies = [line.strip()[:160] for line in body.splitlines()
              if (m := copy.search(line)) and m.group(1) in per_head]
    assert not copies, copies
