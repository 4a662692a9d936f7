"""FP8 checkpoint weights kept in E4M3: `load_checkpoint(path, keep_fp8=True, precision="fp8_v3")`.

The checkpoint is block-quantized with amax/448 per 128x128 block (as the released weights) by the
helpers of test_fp8_checkpoint.py. Tolerances:
- kept weights vs the checkpoint: bit-identical E4M3 bytes and scales (no round trip);
- fp8_v3 forward on kept weights vs fp8_v3 forward on the dequantized float weights: exactly
  equal. fp8_v3 re-quantizes a float weight with s = amax/448 per 128x128 block; for a block
  written with that rule, amax = 448 * s_hf and every value is an E4M3 multiple of s_hf, so the
  re-quantization gives back s_hf and the same E4M3 values (asserted weight by weight below). Both
  forwards then run the same FP32 operations on the same operands;
- kept FP8 forward vs transformers on the dequantized weights: relative RMS logit error <= 0.3.
  Only fp8_v3's activation quantization differs (the weights are the same): every projection
  input is rounded to E4M3 (relative error up to 2^-4 per element), which compounds over the
  layers and flips some top-k routing choices of this random model (measured: 0.13 dense-only,
  0.20 with MoE layers). A scale or block layout error would give O(1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.hf_reference import build_hf_model, hf_logits
from tests.interop.test_fp8_checkpoint import load_dequantized_into, save_block_fp8_checkpoint
from r1jax import models
from r1jax.interop import hf
from r1jax.nn.fp8 import QuantizedArray, dequantize, fp8_ragged_dot, quantize_128x128

torch = pytest.importorskip("torch")

# hidden 160, q_lora 136 give 2x2 and 2x1 block grids (ragged), so a scale grid left in HF's
# (out, in) order would not even have the right shape.
MODEL = dict(seed=11, hidden_size=160, q_lora_rank=136)
# (our path in layer i, HF suffix, expert index or None); layer 0 is dense, layers 1-2 MoE.
KEPT = [(("attn", "q_a"), "self_attn.q_a_proj.weight", None),
        (("attn", "q_b"), "self_attn.q_b_proj.weight", None),
        (("attn", "kv_a"), "self_attn.kv_a_proj_with_mqa.weight", None),
        (("attn", "o"), "self_attn.o_proj.weight", None),
        (("mlp", "gate"), "mlp.gate_proj.weight", None),
        (("mlp", "down"), "mlp.down_proj.weight", None),
        (("moe", "shared", "up"), "mlp.shared_experts.up_proj.weight", None),
        (("moe", "gate"), "mlp.experts.{e}.gate_proj.weight", 5),
        (("moe", "down"), "mlp.experts.{e}.down_proj.weight", 2)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(path, torch tensors as written, transformers model holding the dequantized weights)."""
    path = tmp_path_factory.mktemp("fp8_kept")
    model = build_hf_model(**MODEL)
    quantized, dequantized = save_block_fp8_checkpoint(model, path)
    load_dequantized_into(model, dequantized)
    return path, quantized, model


def _leaf(params, path):
    for key in path:
        params = params[key]
    return params


def test_kept_weights_are_the_checkpoint_bytes(checkpoint):
    path, quantized, _ = checkpoint
    cfg, params = hf.load_checkpoint(str(path), keep_fp8=True, precision="fp8_v3")
    for layer in range(cfg.num_layers):
        for ours, suffix, expert in KEPT:
            if (ours[0] == "mlp") != (layer < cfg.first_k_dense):
                continue
            name = f"model.layers.{layer}." + suffix.format(e=expert)
            q = _leaf(params["layers"][layer], ours)
            assert isinstance(q, QuantizedArray) and q.tile == (128, 128), (name, type(q))
            values = q.values if expert is None else q.values[expert]  # (Kp, Np)
            scales = q.scales if expert is None else q.scales[expert]  # (Kp/128, Np/128)
            hf_bytes = quantized[name].view(torch.uint8).numpy().T  # (in, out)
            k, n = hf_bytes.shape
            ours_bytes = np.asarray(values).view(np.uint8)
            np.testing.assert_array_equal(ours_bytes[:k, :n], hf_bytes, err_msg=name)
            assert not ours_bytes[k:].any() and not ours_bytes[:, n:].any(), f"{name}: padding not zero"
            np.testing.assert_array_equal(np.asarray(scales), quantized[name + "_scale_inv"].numpy().T,
                                          err_msg=name)
        # kv_b is split per head by the absorbed decode path: dequantized to a float array.
        assert isinstance(params["layers"][layer]["attn"]["kv_b"], jax.Array)


def test_kept_fp8_forward_equals_dequantized_fp8_forward_and_tracks_transformers(checkpoint):
    path, _, model = checkpoint
    cfg, kept = hf.load_checkpoint(str(path), keep_fp8=True, precision="fp8_v3")
    _, floats = hf.load_checkpoint(str(path), precision="fp8_v3")
    # The premise of exact equality: fp8_v3's re-quantization of each dequantized weight gives back
    # the checkpoint's E4M3 values and scales.
    for layer in range(cfg.num_layers):
        for ours, _, _ in KEPT:
            if (ours[0] == "mlp") != (layer < cfg.first_k_dense):
                continue
            q, w = _leaf(kept["layers"][layer], ours), _leaf(floats["layers"][layer], ours)
            requantized = quantize_128x128(w.reshape(q.shape))  # heads flattened as in `project`
            np.testing.assert_array_equal(np.asarray(requantized.values).view(np.uint8),
                                          np.asarray(q.values).view(np.uint8))
            np.testing.assert_array_equal(np.asarray(requantized.scales), np.asarray(q.scales))

    tokens = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 24))
    with jax.default_matmul_precision("highest"):
        forward = jax.jit(lambda p, t: models.forward(cfg, p, t)[0])
        from_kept = np.asarray(forward(kept, jnp.asarray(tokens)))  # (B, T, V)
        from_floats = np.asarray(forward(floats, jnp.asarray(tokens)))  # (B, T, V)
    np.testing.assert_array_equal(from_kept, from_floats)

    ref = hf_logits(model, tokens)  # (B, T, V) float32, no activation quantization
    rel_rms = np.sqrt(np.mean((from_kept - ref) ** 2)) / ref.std()
    assert rel_rms <= 0.3, f"kept FP8 vs transformers: relative RMS logit error {rel_rms:.3f}"


def test_kept_weights_need_fp8_v3(checkpoint):
    path, _, _ = checkpoint
    with pytest.raises(ValueError, match="keep_fp8=True keeps E4M3 weights that only precision='fp8_v3'"):
        hf.load_checkpoint(str(path), keep_fp8=True)
    cfg, kept = hf.load_checkpoint(str(path), keep_fp8=True, precision="fp8_v3")
    tokens = jnp.zeros((1, 4), jnp.int32)
    for recipe in ("bf16", "fp8_per_tensor"):
        with pytest.raises(ValueError, match=f"precision='{recipe}' cannot compute with an FP8 checkpoint"):
            models.forward(cfg.replace(precision=recipe), kept, tokens)


def test_prequantized_ragged_dot_matches_the_float_weight_path():
    """Routed experts: the same promotion math on the given E4M3 blocks; the weight is frozen."""
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (40, 160))  # (M, K)
    qw = quantize_128x128(0.1 * jax.random.normal(kw, (3, 160, 136)))  # (G, K, N) 2x2 blocks
    w = dequantize(qw)  # (G, K, N): re-quantizes to qw exactly (amax/448 blocks)
    group_sizes = jnp.array([7, 0, 25], jnp.int32)  # 8 trailing rows in no group

    def loss(x, w):
        return jnp.sum(fp8_ragged_dot(x, w, group_sizes, "fp8_v3") ** 2)

    np.testing.assert_array_equal(fp8_ragged_dot(x, qw, group_sizes, "fp8_v3"),
                                  fp8_ragged_dot(x, w, group_sizes, "fp8_v3"))
    dx_kept, dqw = jax.grad(loss, argnums=(0, 1))(x, qw)
    np.testing.assert_array_equal(dx_kept, jax.grad(loss)(x, w))
    assert not np.asarray(dqw.values.astype(jnp.float32)).any() and not np.asarray(dqw.scales).any()
    with pytest.raises(ValueError, match="needs 128x128 blocks and recipe 'fp8_v3'"):
        fp8_ragged_dot(x, qw, group_sizes, "bf16")
