"""The released FP8 format: E4M3 weights + float32 weight_scale_inv per 128x128 block.

The checkpoint is quantized here with torch (independently of r1jax), loaded with
`load_checkpoint`, and compared with transformers running the dequantized weights.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.hf_reference import build_hf_model, hf_logits
from r1jax import models
from r1jax.interop import hf

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def torch_block_quantize(w, block=128):
    """(out, in) -> (float8_e4m3fn weight, scale_inv (ceil(out/128), ceil(in/128)))."""
    out_dim, in_dim = w.shape
    bo, bi = -(-out_dim // block), -(-in_dim // block)
    scale = torch.zeros(bo, bi)
    q = torch.zeros_like(w)
    for i in range(bo):
        for j in range(bi):
            tile = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            s = tile.abs().max().clamp(min=1e-4) / 448.0
            scale[i, j] = s
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = tile / s
    return q.to(torch.float8_e4m3fn), scale


def save_block_fp8_checkpoint(model, path):
    """Save `model` to `path` in the released FP8 format (projections E4M3 + weight_scale_inv).

    Returns (quantized, dequantized): the torch tensors written, by HF name, and each FP8
    weight's dequantized float32 value.
    """
    model.save_pretrained(path)
    state = safetensors_torch.load_file(path / "model.safetensors")
    quantized, dequantized = {}, {}
    for name, w in state.items():
        if name.endswith(("_proj.weight", "_proj_with_mqa.weight")) and ".mlp.gate." not in name:
            q, s = torch_block_quantize(w.float())
            quantized[name], quantized[name + "_scale_inv"] = q, s
            up = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:w.shape[0], :w.shape[1]]
            dequantized[name] = q.float() * up
        else:
            quantized[name] = w
    safetensors_torch.save_file(quantized, path / "model.safetensors", metadata={"format": "pt"})
    cfg_path = path / "config.json"
    hf_cfg = json.loads(cfg_path.read_text())
    hf_cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                     "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    cfg_path.write_text(json.dumps(hf_cfg))
    return quantized, dequantized


def load_dequantized_into(model, dequantized):
    """Copy the dequantized weights into the transformers model (experts live fused in memory)."""
    sd = model.state_dict()
    with torch.no_grad():
        for name, w in dequantized.items():
            if ".experts." in name:
                prefix, e, proj = name.rsplit(".", 3)[0], int(name.split(".")[-3]), name.split(".")[-2]
                f = model.config.moe_intermediate_size
                if proj == "down_proj":
                    sd[prefix + ".down_proj"][e].copy_(w)
                else:
                    rows = slice(0, f) if proj == "gate_proj" else slice(f, 2 * f)
                    sd[prefix + ".gate_up_proj"][e, rows].copy_(w)
            else:
                sd[name].copy_(w)


def test_fp8_block_checkpoint_loads_as_its_dequantized_weights(tmp_path):
    # hidden 160 and kv_b out 4*(16+12)=112 give ragged 128-blocks.
    model = build_hf_model(seed=11, hidden_size=160)
    _, dequantized = save_block_fp8_checkpoint(model, tmp_path)
    # Reference: transformers with the dequantized weights.
    load_dequantized_into(model, dequantized)
    tokens = np.random.default_rng(5).integers(0, model.config.vocab_size, (2, 24))
    ref = hf_logits(model, tokens)

    cfg, params = hf.load_checkpoint(str(tmp_path))
    with jax.default_matmul_precision("highest"):
        ours, _ = models.forward(cfg, params, jnp.asarray(tokens))
    err = np.abs(np.asarray(ours) - ref).max()
    assert err <= 1e-4, f"FP8 checkpoint: max |logit diff| {err:.2e}"


def test_save_fp8_round_trip_is_within_e4m3_error(tmp_path):
    from r1jax.config import tiny

    cfg = tiny(num_mtp_modules=0, hidden_size=160, init_std=0.1)
    params = models.init(cfg, jax.random.key(0))
    hf.save_checkpoint(cfg, params, str(tmp_path), fp8=True)
    _, loaded = hf.load_checkpoint(str(tmp_path))
    w, w8 = np.asarray(params["layers"][0]["attn"]["q_a"]), np.asarray(loaded["layers"][0]["attn"]["q_a"])
    rel = np.abs(w - w8).max() / np.abs(w).max()
    assert 0 < rel <= 2.0**-4, rel  # E4M3 keeps 3 mantissa bits: half-ulp 2^-4 of the block max
    np.testing.assert_array_equal(np.asarray(params["embed"]), np.asarray(loaded["embed"]))
