"""Bucketed decoding (each segment of steps on a cache of its live length) returns what decoding
over all P + N slots returns: the same tokens, masks and lengths, and logprobs within float32
rounding.

Why not bit-identical logprobs: a step's softmax sum and its probs @ values contraction run
over fewer (masked, zero-weight) slots, so XLA splits the reductions differently and the last
bits move (measured up to 1.5e-6 on the tiny models). Tolerance: |logprob difference| <= 1e-5,
the sampler tests' rule. Tokens must be identical: the random tiny models' top logits are
separated by far more than that rounding.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config, models
from r1jax.models import qwen2
from r1jax.rollout.sampling import SamplingConfig, decode_segments, grow_cache, sample

TOL = 1e-5
MODELS = {"deepseek_v3": lambda: config.tiny(num_layers=2, init_std=0.1),  # a dense and a MoE layer
          "qwen2": lambda: qwen2.tiny(init_std=0.1)}


@pytest.mark.parametrize("slots_per_step", [1, 2], ids=["plain", "speculative"])
@pytest.mark.parametrize("prompt_len,new_tokens,buckets", [
    (9, 37, 4), (32, 256, 4), (6, 16, 4), (5, 3, 4), (32, 256, 3), (7, 100, 1), (1, 1, 8)])
def test_segments_cover_every_step_with_the_slots_it_writes(prompt_len, new_tokens, buckets,
                                                            slots_per_step):
    w = slots_per_step
    segments = decode_segments(prompt_len, new_tokens, buckets, w)
    assert 1 <= len(segments) <= buckets
    assert segments[-1] == (prompt_len + w * new_tokens, new_tokens)
    start = 0
    for live, end in segments:
        assert end > start, f"empty segment in {segments}"
        # the segment's last step, end - 1, writes slots up to P + w * end - 1
        assert prompt_len + w * end <= live
        assert live == prompt_len + w * new_tokens or live % 8 == 0
        start = end
    if buckets == 1:
        assert segments == ((prompt_len + w * new_tokens, new_tokens),)


def test_segments_for_a_prompt_of_32_and_256_new_tokens_are_quarters():
    assert decode_segments(32, 256, 4) == ((96, 64), (160, 128), (224, 192), (288, 256))
    # N = 37 is not a multiple of 4: ceil quarters 10, 19, 28 rounded up to multiples of 8.
    assert decode_segments(9, 37, 4) == ((24, 15), (32, 23), (40, 31), (46, 37))
    # Speculative steps write 2 slots: quarters of 74 slots (19, 37, 56), rounded up to 8.
    assert decode_segments(9, 37, 4, 2) == ((32, 11), (48, 19), (72, 31), (83, 37))


@pytest.mark.parametrize("name", MODELS)
def test_grown_cache_keeps_every_written_slot_and_the_write_index(name):
    cfg = MODELS[name]()
    params = models.init(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 5), 1, cfg.vocab_size)
    _, aux = models.forward(cfg, params, tokens, cache=models.init_cache(cfg, 2, 8), with_mtp=False)
    small = aux["cache"]
    big = grow_cache(cfg, small, 13)
    assert int(big["index"]) == 5 and big["key_valid"].shape == (2, 13)
    for old, new in zip(jax.tree.leaves(small), jax.tree.leaves(big)):
        if old.ndim:  # the slot axis: 1 for most buffers, 2 or 3 for the dense K and V
            axis = next(i for i, (a, b) in enumerate(zip(old.shape, new.shape)) if a != b)
            np.testing.assert_array_equal(np.take(np.asarray(new), range(8), axis), np.asarray(old))
            assert not np.take(np.asarray(new), range(8, 13), axis).any()  # zeros, key_valid False
    assert grow_cache(cfg, small, 8) is small
    with pytest.raises(ValueError, match="only grows"):
        grow_cache(cfg, small, 7)


def left_padded_prompts(vocab_size, b=3, p=9, seed=0):
    """Three prompt lengths: 9, 6 and 3 real tokens after left padding."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab_size, (b, p)).astype(np.int32)
    mask = np.ones((b, p), bool)
    mask[1, :3] = False
    mask[2, :6] = False
    tokens[~mask] = 0
    return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
@pytest.mark.parametrize("name,draft", [("deepseek_v3", "none"), ("qwen2", "none"),
                                        ("deepseek_v3", "mtp")])
def test_bucketed_sampling_equals_sampling_over_every_slot(name, draft, greedy):
    cfg = MODELS[name]()
    params = models.init(cfg, jax.random.key(0))
    prompt, pmask = left_padded_prompts(cfg.vocab_size)
    # N = 37 runs 4 segments (9, 37, 4 above); the stop ids end rows early, at different steps
    # (fewer of them for speculative decoding: its rows reach later segments in fewer steps).
    scfg = SamplingConfig(max_new_tokens=37, greedy=greedy, num_samples=2,
                          stop_ids=tuple(range(5, 30 if draft == "none" else 10)), draft=draft)
    segments = decode_segments(prompt.shape[1], 37, scfg.decode_buckets, 1 + (draft == "mtp"))
    assert len(segments) == 4
    every_slot, bucketed = (
        sample(cfg, dataclasses.replace(scfg, decode_buckets=k), params, prompt, pmask,
               jax.random.key(1)) for k in (1, scfg.decode_buckets))
    counts = ("drafts_proposed", "drafts_accepted") if draft == "mtp" else ()
    for key in ("tokens", "mask", "lengths", *counts):
        np.testing.assert_array_equal(np.asarray(bucketed[key]), np.asarray(every_slot[key]),
                                      err_msg=key)
    np.testing.assert_allclose(np.asarray(bucketed["logprobs"]),
                               np.asarray(every_slot["logprobs"]), rtol=0, atol=TOL)
    lengths = np.asarray(every_slot["lengths"])
    assert (lengths < 37).any(), "no row stopped early: the stop case tested nothing"
    # the steps each row ran (a speculative step may emit 2 tokens)
    steps = np.asarray(every_slot["drafts_proposed"]) if counts else lengths
    assert steps.max() > segments[0][1], "every row stopped in the first segment"
