"""Llama 3.x (a dense R1-Distill student): logit parity with transformers' LlamaForCausalLM with
and without Llama 3 RoPE scaling (at positions past original_max_position_embeddings), checkpoint
round trips, greedy decoding with the r1jax sampler against `generate`, and published counts.

Tolerance: max |logit difference| <= 1e-4 in float32 with highest matmul precision (whole-model
rule of ../STYLE.md); cos/sin of RoPE <= 1e-5 (single-module rule). Weights travel through real
files: save_pretrained -> load_checkpoint.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.interop import hf
from r1jax.models import llama
from r1jax.models.counting import count_params
from r1jax.nn.rope import Llama3RopeScaling, plain_rope_cos_sin
from r1jax.rollout.sampling import SamplingConfig, sample

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.hf_reference import (hf_logits, randomize_weights,  # noqa: E402  (needs torch)
                                 with_moved_norms_and_biases)

TOL = 1e-4
# A 32-token "original" context: the sequences below run to position 95, so every dimension's
# scaling (kept, smoothed, stretched by `factor`) is exercised.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
BASE = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, tie_word_embeddings=False, rope_parameters=LLAMA3_ROPE)
VARIANTS = {
    "gqa_4q_2kv+untied+llama3_rope": {},
    "mqa_4q_1kv+tied+unscaled_theta_5e5": dict(
        num_key_value_heads=1, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    "head_dim_16_not_hidden_over_heads+llama3_rope_factor_32": dict(
        head_dim=16, rope_parameters={**LLAMA3_ROPE, "factor": 32.0}),
}


def build_hf_model(seed: int = 0, **overrides):
    """A LlamaForCausalLM in float32 with every weight random (norm scales too), std 0.1 so
    logits are far from uniform."""
    cfg = transformers.LlamaConfig(**{**BASE, **overrides})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    randomize_weights(model, seed)
    return model


def ours(cfg, params, tokens, **kw) -> np.ndarray:
    with jax.default_matmul_precision("highest"):
        run = jax.jit(lambda p, t, kw: models.forward(cfg, p, t, **kw))
        logits, _ = run(params, jnp.asarray(tokens), kw)
    return np.asarray(logits)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """{variant: (HF model, its save_pretrained directory)}."""
    out = {}
    for name, overrides in VARIANTS.items():
        path = tmp_path_factory.mktemp("llama")
        model = build_hf_model(seed=len(name), **overrides)
        model.save_pretrained(path)
        out[name] = model, path
    return out


def test_rope_cos_sin_match_transformers_past_the_original_context():
    """Llama 3 scaled cos/sin against transformers' LlamaRotaryEmbedding up to 8x the original
    context, and the scaling is not a no-op there."""
    hf_cfg = transformers.LlamaConfig(**{**BASE, "head_dim": 16})
    rotary = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(hf_cfg)
    positions = np.arange(0, 256)[None]  # original context: 32
    with torch.no_grad():
        ref_cos, ref_sin = rotary(torch.zeros(1, dtype=torch.float32), torch.as_tensor(positions))
    scaling = Llama3RopeScaling(factor=4.0, original_max_position_embeddings=32)
    cos, sin = plain_rope_cos_sin(jnp.asarray(positions), 16, 10000.0, scaling)  # (1, T, 8)
    np.testing.assert_allclose(np.asarray(cos), ref_cos.numpy()[..., :8], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(sin), ref_sin.numpy()[..., :8], atol=1e-5, rtol=0)
    plain_cos, _ = plain_rope_cos_sin(jnp.asarray(positions), 16, 10000.0)
    assert np.abs(np.asarray(plain_cos) - ref_cos.numpy()[..., :8])[0, 32:].max() > 0.1


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(name, saved_models):
    model, path = saved_models[name]
    cfg, params = hf.load_checkpoint(str(path))
    assert isinstance(cfg, llama.LlamaConfig)
    assert cfg.num_kv_heads == model.config.num_key_value_heads
    assert ("lm_head" in params) == (not model.config.tie_word_embeddings)
    assert "q_bias" not in params["layers"][0]["attn"]
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 96))  # positions 0..95
    ref = hf_logits(model, tokens)
    err = np.abs(ours(cfg, params, tokens) - ref).max()
    print(f"{name}: max |logit diff| {err:.2e}")
    assert err <= TOL, f"{name}: max |logit diff| {err:.2e} > {TOL}"
    assert np.abs(ref).max() > 0.1, "reference logits too small for the test to mean anything"
    if cfg.rope_scaling is not None:  # without the scaling the far positions must differ
        unscaled = ours(cfg.replace(rope_scaling=None), params, tokens)
        assert np.abs(unscaled - ref)[:, 40:].max() > 1e-2


def test_padded_batch_at_far_positions_matches_transformers(saved_models):
    """Left- and right-padded rows in one batch whose positions start past the original context
    (as a decode deep into a long prompt)."""
    model, path = saved_models["gqa_4q_2kv+untied+llama3_rope"]
    cfg, params = hf.load_checkpoint(str(path))
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (3, 20))
    mask = np.ones((3, 20), np.int64)
    mask[0, :6] = 0  # left padding
    mask[2, 15:] = 0  # right padding
    positions = 150 + np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    ref = hf_logits(model, tokens, attention_mask=mask, positions=positions)
    got = ours(cfg, params, tokens, attention_mask=jnp.asarray(mask), positions=jnp.asarray(positions))
    err = np.abs(got - ref)[mask.astype(bool)].max()
    assert err <= TOL, f"padded batch: max |logit diff| {err:.2e} > {TOL}"


def _random_tiny(seed: int, **kw):
    """Tiny Llama params with non-trivial norm scales, so every tensor must travel."""
    cfg = llama.tiny(init_std=0.1, **kw)
    return cfg, with_moved_norms_and_biases(models.init(cfg, jax.random.key(seed)))


@pytest.mark.parametrize("tied", [False, True])
def test_save_checkpoint_round_trip_through_transformers(tied, tmp_path):
    """Our save_checkpoint -> transformers.from_pretrained -> the logits of our forward (past the
    tiny config's 128-token original context); load_checkpoint gives back every param exactly."""
    cfg, params = _random_tiny(3, tie_word_embeddings=tied)
    hf.save_checkpoint(cfg, params, str(tmp_path))
    model = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").float()
    assert model.config.rope_parameters["rope_type"] == "llama3"
    tokens = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 16))
    positions = np.tile(np.arange(120, 136), (2, 1))
    err = np.abs(ours(cfg, params, tokens, positions=jnp.asarray(positions))
                 - hf_logits(model, tokens, positions=positions)).max()
    assert err <= TOL, f"round trip: max |logit diff| {err:.2e} > {TOL}"
    cfg2, params2 = hf.load_checkpoint(str(tmp_path))
    assert cfg2 == cfg.replace(init_std=cfg2.init_std, scan_layers=cfg2.scan_layers)  # run options
    diffs = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), params, params2)
    assert max(jax.tree.leaves(diffs)) == 0.0


def test_greedy_sampler_matches_transformers_generate(saved_models):
    """The r1jax sampler (prefill + K/V-cache decode) greedy-decodes the tokens of
    generate(do_sample=False), from prompts (one left-padded) that decode past the original
    context; without the RoPE scaling the tokens differ."""
    model, path = saved_models["gqa_4q_2kv+untied+llama3_rope"]
    cfg, params = hf.load_checkpoint(str(path))
    new_tokens, p = 16, 24  # decodes positions 24..39 (19..34 in the padded row)
    prompt = np.random.default_rng(3).integers(1, cfg.vocab_size, (3, p))
    mask = np.ones((3, p), np.int64)
    mask[1, :5], prompt[1, :5] = 0, 0
    with torch.no_grad():
        ref = model.generate(torch.as_tensor(prompt), attention_mask=torch.as_tensor(mask),
                             do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             eos_token_id=None, pad_token_id=0)[:, p:].numpy()

    def greedy(cfg):
        with jax.default_matmul_precision("highest"):
            out = sample(cfg, SamplingConfig(max_new_tokens=new_tokens, greedy=True), params,
                         jnp.asarray(prompt), jnp.asarray(mask.astype(bool)), jax.random.key(0))
        return np.asarray(out["tokens"])

    np.testing.assert_array_equal(greedy(cfg), ref)
    assert len(set(ref.ravel().tolist())) > 3, "greedy reference too repetitive to mean anything"
    assert (greedy(cfg.replace(rope_scaling=None)) != ref).any(), "the RoPE scaling must matter"


def test_the_shared_base_config_is_not_a_model():
    from r1jax.models.dense import DenseConfig

    fields = {f: getattr(llama.tiny(), f) for f in ("vocab_size", "hidden_size", "num_layers",
              "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "rope_theta",
              "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings")}
    with pytest.raises(TypeError, match="build a Qwen2Config or a LlamaConfig"):
        DenseConfig(**fields)


def test_functional_api_roles_and_axes():
    cfg = llama.tiny()
    roles = models.param_roles(cfg)
    assert roles["layers"][0]["attn_norm"]["scale"] == "no_decay"
    assert roles["layers"][0]["attn"]["q"] == "decay" and "q_bias" not in roles["layers"][0]["attn"]
    assert models.param_axes(cfg)["layers"][0]["attn"]["k"] == ("embed", "kv_heads", None)
    assert models.mtp_depth(cfg) == 0
    cache = models.init_cache(cfg, 2, 8)
    assert [k.shape for k in cache["k"]] == [(2, cfg.num_kv_heads, 8, cfg.head_dim)] * cfg.num_layers
    assert [v.shape for v in cache["v"]] == [(2, cfg.num_kv_heads, cfg.head_dim, 8)] * cfg.num_layers


@pytest.mark.parametrize("name", sorted(llama.SIZES))
def test_named_sizes_build_abstractly(name):
    cfg = llama.get_llama_config(name)
    shapes = jax.eval_shape(lambda k: models.init(cfg, k), jax.random.key(0))
    assert jax.tree.structure(shapes) == jax.tree.structure(models.abstract_params(cfg))
    axes = jax.tree.leaves(models.param_axes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    assert [len(s.shape) for s in jax.tree.leaves(shapes)] == [len(a) for a in axes]
    assert "q_bias" not in shapes["layers"][0]["attn"]


def test_published_param_counts():
    # Model cards: Llama 3.2 1B 1,235,814,400 params (tied); Llama 3.1 8B 8,030,261,248.
    assert count_params(llama.llama3_2_1b())["total"] == 1_235_814_400
    assert count_params(llama.llama3_1_8b())["total"] == 8_030_261_248


# ----------------------------------------------------------------------------- config.json

# The config.json of meta-llama/Llama-3.1-8B as released (rope_scaling + top-level rope_theta).
RELEASED_LLAMA_3_1_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}


def test_released_config_json_reads_as_the_named_size():
    from r1jax.interop.llama_config import from_hf_config, to_hf_config

    assert from_hf_config(RELEASED_LLAMA_3_1_8B) == llama.llama3_1_8b()
    for name in llama.SIZES:
        cfg = llama.get_llama_config(name)
        assert from_hf_config(to_hf_config(cfg), scan_layers=cfg.scan_layers) == cfg, name


@pytest.mark.parametrize("changes, match", [
    (dict(attention_bias=True), "config.json: attention_bias=True is not supported"),
    (dict(mlp_bias=True), "config.json: mlp_bias=True is not supported"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_scaling.rope_type='yarn'"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     r"missing required field\(s\) \['rope_scaling.low_freq_factor', 'rope_scaling.high_freq_factor', "
     r"'rope_scaling.original_max_position_embeddings'\]"),
    (dict(rope_scaling={**RELEASED_LLAMA_3_1_8B["rope_scaling"], "low_freq_factor": 4.0}),
     "low_freq_factor=4.0 < high_freq_factor=4.0"),
    (dict(model_type="qwen2"), r"model_type='qwen2' is not a Llama config.json"),
])
def test_unsupported_config_json_names_the_file_and_key(tmp_path, changes, match):
    from r1jax.interop.llama_config import from_hf_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**RELEASED_LLAMA_3_1_8B, **changes}))
    with pytest.raises(ValueError, match=match) as e:
        from_hf_config(str(path))
    assert str(path) in str(e.value)
