"""The sampling engine: greedy = argmax of the full forward at every step, returned logprobs =
the forward's logprobs, and top-p never leaves the nucleus."""

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import config, models
from r1jax.rollout.decoding import draw_categorical, first_argmax
from r1jax.rollout.sampling import SamplingConfig, filter_logits, sample


def left_padded_prompts(cfg, b=3, p=6, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, cfg.vocab_size, (b, p)).astype(np.int32)
    mask = np.ones((b, p), bool)
    mask[1, :2] = False
    tokens[~mask] = 0
    return jnp.asarray(tokens), jnp.asarray(mask)


def full_forward_logprobs(cfg, params, prompt, pmask, gen, gmask):
    seq = jnp.concatenate([prompt, gen], axis=1)
    m = jnp.concatenate([pmask, gmask], axis=1)
    pos = jnp.maximum(jnp.cumsum(m, axis=1) - 1, 0)
    logits, _ = models.forward(cfg, params, seq, positions=pos, attention_mask=m, with_mtp=False)
    p = prompt.shape[1]
    logp = jax.nn.log_softmax(logits[:, p - 1:-1], axis=-1)  # predicts each generated token
    return logp


def test_greedy_is_argmax_and_logprobs_match_forward():
    cfg = config.tiny(num_layers=2, init_std=0.1)  # a dense and a MoE layer
    params = models.init(cfg, jax.random.key(0))
    prompt, pmask = left_padded_prompts(cfg)
    with jax.default_matmul_precision("highest"):
        out = sample(cfg, SamplingConfig(max_new_tokens=8, greedy=True), params, prompt, pmask,
                     jax.random.key(1))
        logp = full_forward_logprobs(cfg, params, prompt, pmask, out["tokens"], out["mask"])
    np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(jnp.argmax(logp, -1)))
    chosen = jnp.take_along_axis(logp, out["tokens"][..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out["logprobs"]), np.asarray(chosen), atol=1e-5)


def test_sampled_logprobs_and_stop_tokens():
    cfg = config.tiny(num_layers=2, init_std=0.1)  # a dense and a MoE layer
    params = models.init(cfg, jax.random.key(2))
    prompt, pmask = left_padded_prompts(cfg, seed=1)
    stop = (5, 6, 7, 8, 9, 10, 11, 12)  # frequent enough to end some rows early
    scfg = SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=4, stop_ids=stop)
    with jax.default_matmul_precision("highest"):
        out = sample(cfg, scfg, params, prompt, pmask, jax.random.key(3))
        logp = full_forward_logprobs(cfg, params, jnp.repeat(prompt, 4, 0), jnp.repeat(pmask, 4, 0),
                                     out["tokens"], out["mask"])
    chosen = jnp.take_along_axis(logp, out["tokens"][..., None], -1)[..., 0]
    m = np.asarray(out["mask"])
    np.testing.assert_allclose(np.asarray(out["logprobs"])[m], np.asarray(chosen)[m], atol=1e-5)
    toks, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
    assert out["tokens"].shape == (12, 12)
    for row in range(12):
        n = lengths[row]
        assert m[row, :n].all() and not m[row, n:].any() and (toks[row, n:] == 0).all()
        if n < 12:
            assert toks[row, n - 1] in stop  # stopped right after a stop token
    assert (lengths < 12).any(), "no row stopped: the stop test tested nothing"


def test_top_p_never_samples_outside_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    filtered = filter_logits(logits, temperature=1.0, top_p=0.8, top_k=0)
    # 0.5 + 0.3 reaches 0.8: only tokens 0 and 1 stay.
    assert np.isfinite(np.asarray(filtered)).tolist() == [[True, True, False, False]]
    draws = jax.random.categorical(jax.random.key(0), jnp.repeat(filtered, 20000, 0))
    counts = np.bincount(np.asarray(draws), minlength=4)
    assert counts[2] == 0 and counts[3] == 0
    assert abs(counts[0] / counts[:2].sum() - 0.5 / 0.8) < 0.02  # renormalised within the nucleus
    top2 = filter_logits(logits, temperature=1.0, top_p=1.0, top_k=2)
    assert np.isfinite(np.asarray(top2)).tolist() == [[True, True, False, False]]


def test_decoding_ends_once_every_row_has_stopped(monkeypatch):
    """Every row stops at its first token (all ids are stop ids): the model runs the prefill and
    one decode step, not max_new_tokens steps (no later decode segment runs), and the outputs
    after the stop are empty."""
    from r1jax.rollout import sampling

    cfg = config.tiny(vocab_size=64, num_layers=2, num_mtp_modules=0)
    params = models.init(cfg, jax.random.key(0))
    prompt, pmask = left_padded_prompts(cfg)
    calls = []
    forward = models.forward

    def counting_forward(*args, **kwargs):
        jax.debug.callback(lambda: calls.append(1))
        return forward(*args, **kwargs)

    monkeypatch.setattr(sampling.models, "forward", counting_forward)
    scfg = SamplingConfig(max_new_tokens=16, greedy=True, stop_ids=tuple(range(64)))
    # More than one decode segment: the later ones must be skipped too.
    assert len(sampling.decode_segments(prompt.shape[1], 16, scfg.decode_buckets)) > 1
    out = sample(cfg, scfg, params, prompt, pmask, jax.random.key(1))
    jax.block_until_ready(out["tokens"])
    assert len(calls) == 2
    assert np.asarray(out["lengths"]).tolist() == [1] * prompt.shape[0]
    assert not np.asarray(out["mask"])[:, 1:].any() and not np.asarray(out["tokens"])[:, 1:].any()


def test_first_argmax_and_draw_categorical_give_jax_tokens():
    # The sampler's own argmax and Gumbel-max draw must give jax's tokens exactly (the recipe's
    # stored results were sampled with jnp.argmax and jax.random.categorical): ties, -inf and
    # NaN rows included.
    logits = jax.random.normal(jax.random.key(0), (64, 257)).at[:8].set(
        jnp.round(jax.random.normal(jax.random.key(1), (8, 257))))  # rows of ties
    logits = logits.at[8].set(-jnp.inf).at[9, 5].set(jnp.nan).at[9, 40].set(jnp.nan)
    logits = logits.at[10, :100].set(-jnp.inf).at[11, 3].set(jnp.inf).at[11, 9].set(jnp.inf)
    np.testing.assert_array_equal(first_argmax(logits), jnp.argmax(logits, axis=-1))
    assert first_argmax(logits).dtype == jnp.int32
    np.testing.assert_array_equal(first_argmax(logits.reshape(8, 8, 257)),
                                  jnp.argmax(logits.reshape(8, 8, 257), axis=-1))
    finite = logits[:8]
    for seed in range(5):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(draw_categorical(key, finite),
                                      jax.random.categorical(key, finite, axis=-1))
        nucleus = filter_logits(logits[12:], temperature=0.7, top_p=0.9, top_k=0)  # -inf tails
        np.testing.assert_array_equal(draw_categorical(key, nucleus),
                                      jax.random.categorical(key, nucleus, axis=-1))
