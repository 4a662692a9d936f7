"""Qwen2 (the dense R1-Distill student): logit parity with transformers' Qwen2ForCausalLM,
checkpoint round trips, K/V-cache decoding, packed rows, named sizes and published counts.

Tolerance: max |logit difference| <= 1e-4 in float32 with highest matmul precision (whole-model
rule of ../STYLE.md). Weights travel through real files: save_pretrained -> load_checkpoint.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import models
from r1jax.interop import hf
from r1jax.models import qwen2
from r1jax.models.counting import count_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.hf_reference import randomize_weights, with_moved_norms_and_biases  # noqa: E402

TOL = 1e-4
BASE = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-6, tie_word_embeddings=False)
VARIANTS = {
    "gqa_4q_2kv+untied": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    "mqa_4q_1kv+tied+theta_1e6": dict(num_key_value_heads=1, tie_word_embeddings=True,
                                      rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    "head_dim_16_not_hidden_over_heads": dict(head_dim=16),
    # transformers applies Llama 3 RoPE scaling to Qwen2 too; 24 tokens run past 8 positions.
    "llama3_rope_scaling": dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
}


def build_hf_model(seed: int = 0, **overrides):
    """A Qwen2ForCausalLM in float32 with every weight random (norm scales and q/k/v biases
    too), std 0.1 so logits are far from uniform."""
    cfg = transformers.Qwen2Config(**{**BASE, **overrides})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(cfg).float().eval()
    randomize_weights(model, seed)
    return model


def _as_long(x):
    return None if x is None else torch.as_tensor(np.asarray(x), dtype=torch.long)


def hf_logits(model, tokens, attention_mask=None, positions=None) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=_as_long(tokens), attention_mask=_as_long(attention_mask),
                    position_ids=_as_long(positions))
    return out.logits.float().numpy()


def ours(cfg, params, tokens, **kw) -> np.ndarray:
    with jax.default_matmul_precision("highest"):
        run = jax.jit(lambda p, t, kw: models.forward(cfg, p, t, **kw))
        logits, _ = run(params, jnp.asarray(tokens), kw)
    return np.asarray(logits)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(name, tmp_path):
    model = build_hf_model(seed=len(name), **VARIANTS[name])
    model.save_pretrained(tmp_path)
    cfg, params = hf.load_checkpoint(str(tmp_path))
    assert isinstance(cfg, qwen2.Qwen2Config)
    assert cfg.num_kv_heads == model.config.num_key_value_heads
    assert ("lm_head" in params) == (not model.config.tie_word_embeddings)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24))
    ref = hf_logits(model, tokens)
    err = np.abs(ours(cfg, params, tokens) - ref).max()
    assert err <= TOL, f"{name}: max |logit diff| {err:.2e} > {TOL}"
    assert np.abs(ref).max() > 0.1, "reference logits too small for the test to mean anything"


def test_padded_batch_matches_transformers(tmp_path):
    """Left- and right-padded rows in one batch; positions count real tokens only."""
    model = build_hf_model(seed=7)
    model.save_pretrained(tmp_path)
    cfg, params = hf.load_checkpoint(str(tmp_path))
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (3, 20))
    mask = np.ones((3, 20), np.int64)
    mask[0, :6] = 0  # left padding
    mask[2, 15:] = 0  # right padding
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    ref = hf_logits(model, tokens, attention_mask=mask, positions=positions)
    got = ours(cfg, params, tokens, attention_mask=jnp.asarray(mask), positions=jnp.asarray(positions))
    err = np.abs(got - ref)[mask.astype(bool)].max()
    assert err <= TOL, f"padded batch: max |logit diff| {err:.2e} > {TOL}"


def _random_tiny(seed: int, **kw):
    """Tiny Qwen2 params with non-trivial norms and biases, so every tensor must travel."""
    cfg = qwen2.tiny(init_std=0.1, **kw)
    return cfg, with_moved_norms_and_biases(models.init(cfg, jax.random.key(seed)))


@pytest.mark.parametrize("tied", [False, True])
def test_save_checkpoint_round_trip_through_transformers(tied, tmp_path):
    """Our save_checkpoint -> transformers.from_pretrained -> the logits of our forward; and
    load_checkpoint gives back every param exactly."""
    cfg, params = _random_tiny(3, tie_word_embeddings=tied)
    hf.save_checkpoint(cfg, params, str(tmp_path))
    model = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").float()
    tokens = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 16))
    err = np.abs(ours(cfg, params, tokens) - hf_logits(model, tokens)).max()
    assert err <= TOL, f"round trip: max |logit diff| {err:.2e} > {TOL}"
    cfg2, params2 = hf.load_checkpoint(str(tmp_path))
    assert cfg2 == cfg.replace(init_std=cfg2.init_std, scan_layers=cfg2.scan_layers)  # run options
    diffs = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), params, params2)
    assert max(jax.tree.leaves(diffs)) == 0.0


def test_kv_cache_decode_matches_full_forward():
    cfg, params = _random_tiny(0)
    b, t, prefill = 3, 14, 5
    tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
    mask = np.ones((b, t), np.int32)
    mask[1, :3] = 0  # a left-padded row: its pad keys must stay invisible forever
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with jax.default_matmul_precision("highest"):
        full, _ = jax.jit(lambda p: models.forward(cfg, p, tokens, attention_mask=mask,
                                                   positions=positions))(params)
        step = jax.jit(lambda p, tok, m, pos, c: models.forward(
            cfg, p, tok, attention_mask=m, positions=pos, cache=c))
        cache = models.init_cache(cfg, b, t)
        assert [k.shape for k in cache["k"]] == [(b, cfg.num_kv_heads, t, cfg.head_dim)] * cfg.num_layers
        logits, aux = step(params, tokens[:, :prefill], mask[:, :prefill], positions[:, :prefill], cache)
        pieces, cache = [logits], aux["cache"]
        for i in range(prefill, t):
            one = slice(i, i + 1)
            logits, aux = step(params, tokens[:, one], mask[:, one], positions[:, one], cache)
            pieces.append(logits)
            cache = aux["cache"]
    decoded = np.concatenate([np.asarray(x) for x in pieces], axis=1)
    err = np.abs(decoded - np.asarray(full))[mask.astype(bool)].max()
    assert err <= TOL, f"cached decode differs from full forward by {err:.2e}"
    assert int(cache["index"]) == t
    assert aux["balance_loss"] == 0.0 and aux["expert_load"].size == 0


def test_packed_segments_match_separate_rows():
    """Two documents packed in one row (positions restart) give each document's own logits."""
    cfg, params = _random_tiny(5)
    doc_a, doc_b = np.arange(1, 8), np.arange(20, 29)
    packed = np.concatenate([doc_a, doc_b])[None]
    segment_ids = np.array([[1] * len(doc_a) + [2] * len(doc_b)])
    positions = np.concatenate([np.arange(len(doc_a)), np.arange(len(doc_b))])[None]
    got = ours(cfg, params, packed, segment_ids=jnp.asarray(segment_ids),
               positions=jnp.asarray(positions))
    alone = np.concatenate([ours(cfg, params, doc_a[None]), ours(cfg, params, doc_b[None])], axis=1)
    assert np.abs(got - alone).max() <= TOL
    unmasked = ours(cfg, params, packed, positions=jnp.asarray(positions))
    assert np.abs(unmasked - alone)[0, len(doc_a):].max() > 1e-2, "segments must matter"


def test_sft_step_runs_unchanged_on_qwen2():
    from r1jax.train.state import init_state
    from r1jax.train.steps import lm_loss, lm_norms, make_step

    cfg = qwen2.tiny()
    tx = optax.adam(1e-2)
    state = init_state(cfg, tx, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, cfg.vocab_size)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": jnp.ones((2, 8))}
    step = jax.jit(make_step(cfg, tx, lm_loss(cfg, mtp_weight=0.3), lambda b: lm_norms(b, cfg),
                             bias_update_speed=1e-3))
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", sorted(qwen2.SIZES))
def test_named_sizes_build_abstractly_with_axes(name):
    cfg = qwen2.get_qwen2_config(name)
    shapes = jax.eval_shape(lambda k: models.init(cfg, k), jax.random.key(0))
    axes = models.param_axes(cfg)
    jax.tree.map(lambda s, a: None if len(s.shape) == len(a) else pytest.fail(f"{s.shape} vs {a}"),
                 shapes, axes, is_leaf=lambda x: isinstance(x, tuple))
    assert axes["layers"][0]["attn"]["k"] == ("embed", "kv_heads", None)
    assert jax.tree.structure(shapes) == jax.tree.structure(models.abstract_params(cfg))


def test_kv_heads_shard_on_tensor_where_it_divides():
    from jax.sharding import PartitionSpec as P

    from r1jax.nn.partitioning import logical_to_spec

    k_axes = models.param_axes(qwen2.qwen2_5_7b())["layers"][0]["attn"]["k"]
    shape = (3584, 4, 128)  # (D, K, Dh): 4 kv heads
    assert logical_to_spec(k_axes, shape, {"fsdp": 2, "tensor": 4}) == P("fsdp", "tensor", None)
    assert logical_to_spec(k_axes, shape, {"fsdp": 2, "tensor": 8}) == P("fsdp", None, None)


def test_published_param_counts():
    # Qwen2.5 report / model cards: 1.54B (1.31B non-embedding), 7.61B (6.53B non-embedding).
    small, big = count_params(qwen2.qwen2_5_1_5b()), count_params(qwen2.qwen2_5_7b())
    assert round(small["total"] / 1e9, 2) == 1.54 and round(small["non_embedding"] / 1e9, 2) == 1.31
    assert 7.61e9 <= big["total"] < 7.62e9 and round(big["non_embedding"] / 1e9, 2) == 6.53

    def closed_form(d, layers, heads, kv, dh, f, vocab, tied):
        attn = d * heads * dh * 2 + 2 * d * kv * dh + (heads + 2 * kv) * dh  # q, o, k, v, biases
        return layers * (attn + 3 * d * f + 2 * d) + d + vocab * d * (1 if tied else 2)

    assert small["total"] == closed_form(1536, 28, 12, 2, 128, 8960, 151936, True)
    assert big["total"] == closed_form(3584, 28, 28, 4, 128, 18944, 152064, False)


# ----------------------------------------------------------------------------- errors

@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2_tiny")
    cfg, params = _random_tiny(9)
    hf.save_checkpoint(cfg, params, str(path))
    return path


def _copy_with_config(src, dst, **changes):
    for fn in os.listdir(src):
        if fn != "config.json":
            os.link(src / fn, dst / fn)
    hf_cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**hf_cfg, **changes}))


@pytest.mark.parametrize("changes, match", [
    (dict(use_sliding_window=True, sliding_window=8), "use_sliding_window=True"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "layer_types"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}),
     "rope_scaling.rope_type='yarn'"),
    (dict(num_key_value_heads=1),
     r"k_proj.weight has shape \(32, 64\), but config.json implies \(16, 64\)"),
    (dict(intermediate_size=96),
     r"mlp.gate_proj.weight has shape \(128, 64\), but config.json implies \(96, 64\)"),
])
def test_unsupported_or_inconsistent_config_names_the_key(saved_tiny, tmp_path, changes, match):
    _copy_with_config(saved_tiny, tmp_path, **changes)
    with pytest.raises(ValueError, match=match):
        hf.load_checkpoint(str(tmp_path))


def test_missing_tensor_is_named(tmp_path):
    from r1jax.interop.qwen2 import params_to_hf
    from r1jax.interop.qwen2_config import to_hf_config
    from r1jax.interop.safetensors_io import save_sharded

    cfg, params = _random_tiny(1)
    tensors = params_to_hf(cfg, params)
    del tensors["model.layers.1.self_attn.v_proj.bias"]
    save_sharded(tensors, str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(cfg)))
    with pytest.raises(ValueError, match="missing tensor 'model.layers.1.self_attn.v_proj.bias'"):
        hf.load_checkpoint(str(tmp_path))
