"""Logit parity with transformers' DeepseekV3ForCausalLM on tiny random models.

Tolerance: max |logit difference| <= 1e-4 in float32 with highest matmul precision (whole-model
rule of ../STYLE.md). Weights travel through real files: save_pretrained -> load_checkpoint.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.hf_reference import NO_YARN, YARN, build_hf_model, hf_logits
from r1jax import models
from r1jax.interop import hf

TOL = 1e-4

VARIANTS = {
    "q_lora+yarn+groups": dict(rope=YARN),
    "no_q_lora+plain_rope+half_split": dict(rope=NO_YARN, q_lora_rank=None, n_group=1, topk_group=1,
                                            rope_interleave=False),
    "all_moe+top1_group": dict(rope=YARN, first_k_dense_replace=0, n_group=2, topk_group=1,
                               num_experts_per_tok=2, n_shared_experts=2),
    "tied+no_norm_topk": dict(rope=YARN, tie_word_embeddings=True, norm_topk_prob=False,
                              routed_scaling_factor=1.0),
}


def _ours(path, tokens, **kw):
    cfg, params = hf.load_checkpoint(path)
    with jax.default_matmul_precision("highest"):
        logits, _ = jax.jit(lambda p, t: models.forward(cfg, p, t, **kw))(params, jnp.asarray(tokens))
    return np.asarray(logits)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(name, tmp_path):
    kw = dict(VARIANTS[name])
    model = build_hf_model(seed=len(name), **kw)
    model.save_pretrained(tmp_path)
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 40))
    ref = hf_logits(model, tokens)
    ours = _ours(tmp_path, tokens)
    err = np.abs(ours - ref).max()
    assert err <= TOL, f"{name}: max |logit diff| {err:.2e} > {TOL}"
    assert np.abs(ref).max() > 0.1, "reference logits too small for the test to mean anything"


def test_padded_batch_matches_transformers(tmp_path):
    """Left- and right-padded rows in one batch; positions count real tokens only."""
    model = build_hf_model(seed=7)
    model.save_pretrained(tmp_path)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, model.config.vocab_size, (3, 24))
    mask = np.ones((3, 24), np.int64)
    mask[0, :5] = 0  # left padding
    mask[1, 17:] = 0  # right padding
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    ref = hf_logits(model, tokens, attention_mask=mask, positions=positions)
    ours = _ours(tmp_path, tokens, attention_mask=jnp.asarray(mask), positions=jnp.asarray(positions))
    valid = mask.astype(bool)
    err = np.abs(ours - ref)[valid].max()
    assert err <= TOL, f"padded batch: max |logit diff| {err:.2e} > {TOL}"


def test_save_checkpoint_round_trip_through_transformers(tmp_path):
    """Our save_checkpoint -> transformers.from_pretrained -> the same logits as our forward."""
    from r1jax.config import tiny
    import transformers

    cfg = tiny(num_mtp_modules=1, init_std=0.1)
    params = models.init(cfg, jax.random.key(3))
    # Make norms and routing biases non-trivial so the round trip must carry them.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 * jax.random.normal(jax.random.key(len(str(p))), x.shape)
        if ("scale" in str(p) or "bias" in str(p)) else x, params)
    hf.save_checkpoint(cfg, params, tmp_path)
    model = transformers.DeepseekV3ForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").float()
    tokens = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 30))
    ref = hf_logits(model, tokens)
    with jax.default_matmul_precision("highest"):
        ours, _ = models.forward(cfg, params, jnp.asarray(tokens))
    assert np.abs(np.asarray(ours) - ref).max() <= TOL
    # And back: load_checkpoint recovers every param, MTP module included.
    cfg2, params2 = hf.load_checkpoint(str(tmp_path))
    assert cfg2 == cfg.replace(param_dtype="float32", init_std=cfg2.init_std,
                               scan_layers=cfg2.scan_layers)  # run options
    diffs = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), params, params2)
    assert max(jax.tree.leaves(diffs)) == 0.0
