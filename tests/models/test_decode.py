"""Absorbed decoding on the latent cache equals the naive full forward (<= 1e-4, float32)."""

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import config, models

TOL = 1e-4


def test_prefill_then_decode_matches_full_forward():
    cfg = config.tiny(num_layers=2, init_std=0.1)  # a dense and a MoE layer
    params = models.init(cfg, jax.random.key(0))
    b, t, prefill = 3, 20, 7
    tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
    mask = np.ones((b, t), np.int32)
    mask[1, :3] = 0  # a left-padded row: its pad keys must stay invisible forever
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with jax.default_matmul_precision("highest"):
        full, _ = models.forward(cfg, params, tokens, attention_mask=mask, positions=positions)
        step = jax.jit(lambda p, tok, m, pos, c: models.forward(
            cfg, p, tok, attention_mask=m, positions=pos, cache=c))
        cache = models.init_cache(cfg, b, t)
        logits, aux = step(params, tokens[:, :prefill], mask[:, :prefill], positions[:, :prefill], cache)
        pieces = [logits]
        cache = aux["cache"]
        for i in range(prefill, t):
            logits, aux = step(params, tokens[:, i:i + 1], mask[:, i:i + 1], positions[:, i:i + 1], cache)
            pieces.append(logits)
            cache = aux["cache"]
    decoded = np.concatenate([np.asarray(x) for x in pieces], axis=1)
    valid = mask.astype(bool)
    err = np.abs(decoded - np.asarray(full))[valid].max()
    assert err <= TOL, f"absorbed decode differs from full forward by {err:.2e}"
    assert int(cache["index"]) == t


def test_latent_cache_is_576_values_per_token_for_v3():
    cfg = config.deepseek_v3_671b()
    assert cfg.latent_cache_values_per_token() == 576
    # A materialised K/V cache holds H * (d_qk + d_v) = 128 * (192 + 128) values per token.
    assert cfg.full_kv_cache_values_per_token() == 40960
    cache = jax.eval_shape(lambda: models.init_cache(cfg, 1, 8, jnp.bfloat16))
    per_token = sum(x.size for x in (*cache["c_kv"], *cache["k_rope"])) / 8
    assert per_token == 576 * cfg.num_layers


def test_mtp_draft_on_its_cache_with_holes_matches_training_mtp_logits():
    """The MTP drafter of speculative decoding, run chunk by chunk on its own latent cache with a
    rejected (invalid) slot between chunks, gives the depth-1 MTP logits of the uncached training
    forward: query i sees h_i, the embedding of token i+1, and the MTP keys of earlier positions."""
    cfg = config.tiny(num_layers=2, init_std=0.1)
    params = models.init(cfg, jax.random.key(0))
    b, t, first = 2, 10, 6
    tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    ones = jnp.ones((b, t), jnp.bool_)
    with jax.default_matmul_precision("highest"):
        _, aux = models.forward(cfg, params, tokens)
        reference = np.asarray(aux["mtp_logits"][0, :, :t - 1])  # (B, T-1, V): the last has no t+1
        cache, mtp_cache = models.init_cache(cfg, b, t + 1), models.init_mtp_cache(cfg, b, t + 1)
        pieces = []
        for lo, hi in ((0, first), (first, t - 1)):
            _, aux = models.forward(cfg, params, tokens[:, lo:hi], positions=positions[:, lo:hi],
                                    cache=cache)
            drafts, mtp_cache = models.mtp_draft(
                cfg, params, tokens[:, lo + 1:hi + 1], aux["hidden"], positions=positions[:, lo:hi],
                attention_mask=ones[:, lo:hi], cache=mtp_cache)
            pieces.append(np.asarray(drafts))
            cache = aux["cache"]
            if lo == 0:  # a rejected draft's slot in both caches: written, then invalid
                garbage = jnp.full((b, 1), 7)
                _, aux = models.forward(cfg, params, garbage, positions=positions[:, hi:hi + 1],
                                        attention_mask=~ones[:, :1], cache=cache)
                _, mtp_cache = models.mtp_draft(cfg, params, garbage, aux["hidden"],
                                                positions=positions[:, hi:hi + 1],
                                                attention_mask=~ones[:, :1], cache=mtp_cache)
                cache = aux["cache"]
    err = np.abs(np.concatenate(pieces, axis=1) - reference).max()
    assert np.abs(reference).max() > 0.1, "reference logits trivially small"
    assert err <= TOL, f"cached MTP drafts differ from the training MTP logits by {err:.2e}"
