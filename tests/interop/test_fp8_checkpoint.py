"""The released FP8 format: E4M3 weights + float32 weight_scale_inv per 128x128 block.

The checkpoint is written with r1jax's one block quantizer (amax/448 per block, as the released
weights; checked bit for bit against the numpy model in test_fp8_block_quantizer.py), its
dequantized weights are computed here in torch (independently of the loader), and transformers
running them is the reference for `load_checkpoint`.
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


def block_quantize(w):
    """torch (out, in) -> (float8_e4m3fn weight, scale_inv (ceil(out/128), ceil(in/128))) as torch."""
    q, scale_inv = hf.quantize_block_fp8(w.numpy())
    q = torch.from_numpy(np.array(q.view(np.uint8))).view(torch.float8_e4m3fn)  # copies: torch wants writable
    return q, torch.from_numpy(np.array(scale_inv))


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
            q, s = block_quantize(w.float())
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
