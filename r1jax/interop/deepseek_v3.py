"""Load and save Hugging Face DeepSeek-V3 checkpoints, the released FP8 format included.

Handles bf16/fp32 weights, the released FP8 format (E4M3 weights with a float32
`weight_scale_inv` per 128x128 block), per-expert and fused expert layouts, and the MTP layers
that the released weights store as `model.layers.{num_hidden_layers + k}`. The config.json mapping
is deepseek_v3_config.py; reading, layouts, FP8 blocks and writing are checkpoint_io.py.

By default FP8 tensors are dequantized to float params. With `keep_fp8=True` (and
precision="fp8_v3") each FP8 weight that the model computes on as one fp8_v3 projection of the
very HF matrix stays a 128x128 `QuantizedArray` (K=in, N=out): the E4M3 bytes and
`weight_scale_inv` are transposed, never converted (see `load_checkpoint` for which weights).
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from r1jax.config import ModelConfig
from r1jax.interop.checkpoint_io import (
    CheckpointReader,
    as_jax_params,
    config_json_path,
    host_params_and_shared_tensors,
    quantize_block_fp8,
    save_dtype,
    to_hf,
    write_checkpoint,
)
from r1jax.interop.deepseek_v3_config import from_hf_config, to_hf_config
from r1jax.models.api import abstract_params
from r1jax.nn.fp8_quant import TILE, QuantizedArray, dequantize

# (our path inside a decoder block, HF name suffix, layout kind of checkpoint_io)
_BLOCK_TABLE = [
    (("attn_norm", "scale"), "input_layernorm.weight", "id"),
    (("attn", "q_a"), "self_attn.q_a_proj.weight", "T"),
    (("attn", "q_norm", "scale"), "self_attn.q_a_layernorm.weight", "id"),
    (("attn", "q_b"), "self_attn.q_b_proj.weight", "heads"),
    (("attn", "q_proj"), "self_attn.q_proj.weight", "heads"),
    (("attn", "kv_a"), "self_attn.kv_a_proj_with_mqa.weight", "T"),
    (("attn", "kv_norm", "scale"), "self_attn.kv_a_layernorm.weight", "id"),
    (("attn", "kv_b"), "self_attn.kv_b_proj.weight", "heads"),
    (("attn", "o"), "self_attn.o_proj.weight", "o"),
    (("ffn_norm", "scale"), "post_attention_layernorm.weight", "id"),
    (("mlp", "gate"), "mlp.gate_proj.weight", "T"),
    (("mlp", "up"), "mlp.up_proj.weight", "T"),
    (("mlp", "down"), "mlp.down_proj.weight", "T"),
    (("moe", "router"), "mlp.gate.weight", "T"),
    (("moe", "bias"), "mlp.gate.e_score_correction_bias", "id"),
    (("moe", "shared", "gate"), "mlp.shared_experts.gate_proj.weight", "T"),
    (("moe", "shared", "up"), "mlp.shared_experts.up_proj.weight", "T"),
    (("moe", "shared", "down"), "mlp.shared_experts.down_proj.weight", "T"),
]
_MTP_TABLE = [
    (("enorm", "scale"), "enorm.weight", "id"),
    (("hnorm", "scale"), "hnorm.weight", "id"),
    (("eh_proj",), "eh_proj.weight", "T"),
    (("head_norm", "scale"), "shared_head.norm.weight", "id"),
]
_MTP_OWN = ("enorm", "hnorm", "eh_proj", "head_norm")  # an MTP module's params outside its block
_EXPERT_PROJ = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
# With keep_fp8: the weights whose forward is one fp8_v3 `project` on the HF matrix transposed,
# heads flattened exactly as HF flattens them, so the HF 128x128 block grid is our block grid.
# Not here: kv_b (split per head into W_UK / W_UV and used by the absorbed decode einsums),
# eh_proj (a plain einsum in the MTP module), the router (FP32 gate, not FP8 in the checkpoints).
_KEPT_FP8 = {("attn", "q_a"), ("attn", "q_b"), ("attn", "q_proj"), ("attn", "kv_a"), ("attn", "o"),
             ("mlp", "gate"), ("mlp", "up"), ("mlp", "down"),
             ("moe", "shared", "gate"), ("moe", "shared", "up"), ("moe", "shared", "down")}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _load_block(r: CheckpointReader, prefix: str, abstract: dict, keep_fp8: bool) -> dict:
    out = {}
    for path, suffix, kind in _BLOCK_TABLE + _MTP_TABLE:
        node = abstract
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or path[-1] not in node:
            continue
        target = out
        for key in path[:-1]:
            target = target.setdefault(key, {})
        get = r.get_kept if keep_fp8 and path in _KEPT_FP8 else r.get_shaped
        target[path[-1]] = get(prefix + suffix, kind, node[path[-1]].shape)
    if "moe" in abstract:
        out["moe"].update(_load_experts(r, prefix + "mlp.experts.", abstract["moe"], keep_fp8))
    return out


def _stack_experts(ws: list) -> np.ndarray | QuantizedArray:
    """Per-expert (in, out) weights -> (E, in, out); kept only if every expert is kept in E4M3."""
    if all(isinstance(w, QuantizedArray) for w in ws):
        return QuantizedArray(jnp.stack([w.values for w in ws]),  # (E, Kp, Np)
                              jnp.stack([w.scales for w in ws]),  # (E, Kp/128, Np/128)
                              (len(ws), *ws[0].shape), ws[0].tile)
    return np.stack([np.asarray(dequantize(w)) if isinstance(w, QuantizedArray) else w for w in ws])


def _load_experts(r: CheckpointReader, prefix: str, abstract: dict, keep_fp8: bool) -> dict:
    e, d, f = abstract["gate"].shape
    if r.has(prefix + "gate_up_proj"):  # fused layout: gate_up (E, 2F, D), down (E, D, F)
        # Split at F, which need not fall on a 128-block edge: never kept in FP8.
        gate_up = r.get_shaped(prefix + "gate_up_proj", "id", (e, 2 * f, d))
        down = r.get_shaped(prefix + "down_proj", "id", (e, d, f))
        return {"gate": gate_up[:, :f].transpose(0, 2, 1), "up": gate_up[:, f:].transpose(0, 2, 1),
                "down": down.transpose(0, 2, 1)}
    get = r.get_kept if keep_fp8 else r.get_shaped
    return {ours: _stack_experts([get(f"{prefix}{i}.{hf}.weight", "T", abstract[ours].shape[1:])
                                  for i in range(e)])
            for ours, hf in _EXPERT_PROJ.items()}


def model_config(path: str, hf_config: dict, reader: CheckpointReader | None = None, *,
                 warn: bool = False, **config_overrides) -> ModelConfig:
    """The ModelConfig `load_checkpoint` gives for `path`, reading only config.json and the
    tensor names: MTP modules that config.json declares but the files lack are left out."""
    cfg = from_hf_config(hf_config, config_path=config_json_path(path), **config_overrides)
    reader = reader or CheckpointReader(path)
    present = sum(reader.has(f"model.layers.{cfg.num_layers + k}.eh_proj.weight")
                  for k in range(cfg.num_mtp_modules))
    if present < cfg.num_mtp_modules:
        # transformers saves no MTP weights even when config.json keeps num_nextn_predict_layers.
        if warn:
            warnings.warn(f"{path}: config.json declares {cfg.num_mtp_modules} MTP modules but "
                          f"the checkpoint holds {present}; loading without the missing ones",
                          stacklevel=4)
        cfg = cfg.replace(num_mtp_modules=present)
    return cfg


def load_checkpoint(path: str, hf_config: dict, *, keep_fp8: bool = False,
                    **config_overrides) -> tuple[ModelConfig, dict]:
    """(cfg, params) from the checkpoint directory `path` whose config.json is `hf_config`; params
    are float32 numpy-backed jax arrays unless `param_dtype` is overridden.

    FP8 tensors (E4M3 + `weight_scale_inv` per 128x128 block) are dequantized, unless
    `keep_fp8=True` (which needs precision="fp8_v3", e.g. as a config override): then each FP8
    weight below stays a 128x128 `QuantizedArray` (K=in, N=out) holding the checkpoint's E4M3
    bytes and scales, transposed from HF's (out, in) with no float round trip; the forward runs
    them through fp8_v3's pre-quantized Fprop (frozen weights: inference, or training the rest).
      kept:  q_a, q_b (or q_proj), kv_a, o; dense FFN and shared-expert gate/up/down; routed
             expert gate/up/down (per-expert layout, stacked to (E, K, N)). Each is one fp8_v3
             projection whose (K, N) matrix is exactly the HF matrix transposed (heads flattened
             as HF flattens them), so the HF blocks are the blocks fp8_v3 would use.
      dequantized: kv_b, split per head into W_UK / W_UV, which the absorbed decode path uses
             in einsums outside any projection; eh_proj, a plain einsum in the MTP module; fused
             expert tensors (gate_up_proj), split at F, which need not be a block edge.
    The router, norms, embedding and head are not FP8 in the checkpoints and stay float.
    Kept weights ignore `param_dtype`, are replicated by `sharding.shardings_like`, and routed
    experts kept in FP8 run on one device (no expert parallelism).
    """
    r = CheckpointReader(path)
    cfg = model_config(path, hf_config, r, warn=True, **config_overrides)
    if keep_fp8 and cfg.precision != "fp8_v3":
        raise ValueError(f"keep_fp8=True keeps E4M3 weights that only precision='fp8_v3' computes "
                         f"on, but the config has precision={cfg.precision!r}: pass "
                         f"precision='fp8_v3', or keep_fp8=False to dequantize")
    abstract = abstract_params(cfg)
    params = {"embed": r.get_shaped("model.embed_tokens.weight", "id", abstract["embed"].shape),
              "final_norm": {"scale": r.get_shaped("model.norm.weight", "id", (cfg.hidden_size,))},
              "layers": {i: _load_block(r, f"model.layers.{i}.", abstract["layers"][i], keep_fp8)
                         for i in range(cfg.num_layers)},
              "mtp": {}}
    if not cfg.tie_word_embeddings:
        params["lm_head"] = r.get_shaped("lm_head.weight", "T", abstract["lm_head"].shape)
    for k in range(cfg.num_mtp_modules):
        prefix = f"model.layers.{cfg.num_layers + k}."
        mod = _load_block(r, prefix, {**abstract["mtp"][k], **abstract["mtp"][k]["block"]}, keep_fp8)
        params["mtp"][k] = {key: mod.pop(key) for key in _MTP_OWN}
        params["mtp"][k]["block"] = mod
        # The released MTP layers carry copies of the shared embedding and head.
        r.mark_used(prefix + "embed_tokens.weight", prefix + "shared_head.head.weight")
    if not params["mtp"]:
        del params["mtp"]  # the model's params hold no MTP entry without MTP modules
    r.check_all_used()
    return cfg, as_jax_params(params, cfg.param_dtype)


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------


def _save_block(block: dict, prefix: str, out: dict) -> None:
    for path, suffix, kind in _BLOCK_TABLE + _MTP_TABLE:
        node = block
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            out[prefix + suffix] = to_hf(node, kind)
    if "moe" in block:
        for ours, hf in _EXPERT_PROJ.items():
            for i, w in enumerate(block["moe"][ours]):
                out[f"{prefix}mlp.experts.{i}.{hf}.weight"] = w.T


def params_to_hf(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Our params as HF-named (out, in) float32 numpy tensors, MTP layers included."""
    p, out = host_params_and_shared_tensors(cfg, params)
    for i in range(cfg.num_layers):
        _save_block(p["layers"][i], f"model.layers.{i}.", out)
    for k in range(cfg.num_mtp_modules):
        prefix = f"model.layers.{cfg.num_layers + k}."
        mod = p["mtp"][k]
        _save_block({**mod["block"], **{key: mod[key] for key in _MTP_OWN}}, prefix, out)
        out[prefix + "embed_tokens.weight"] = p["embed"]
        out[prefix + "shared_head.head.weight"] = p["embed"] if cfg.tie_word_embeddings else p["lm_head"].T
    return out


def _is_fp8_linear(name: str) -> bool:
    """The weights the released checkpoints store in FP8: attention and FFN/expert projections."""
    return (name.endswith(("_proj.weight", "_proj_with_mqa.weight")) and ".mlp.gate." not in name
            and "embed" not in name)


def save_checkpoint(cfg: ModelConfig, params: dict, path: str, *, dtype: str = "float32",
                    fp8: bool = False, max_shard_bytes: int = 4 << 30) -> None:
    """Write config.json + safetensors that `transformers` loads (dtype float32 or bfloat16).
    With fp8=True, projections are stored in the released E4M3 128x128-block format."""
    np_dtype = save_dtype(dtype)
    out = {}
    for name, x in params_to_hf(cfg, params).items():
        if fp8 and _is_fp8_linear(name) and x.ndim == 2:
            out[name], out[name + "_scale_inv"] = quantize_block_fp8(x)
        elif name.endswith("e_score_correction_bias"):
            out[name] = x.astype(np.float32)  # kept in fp32 like the reference
        else:
            out[name] = x.astype(np_dtype)
    hf_config = {**to_hf_config(cfg), "torch_dtype": dtype}
    if fp8:
        hf_config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                            "activation_scheme": "dynamic",
                                            "weight_block_size": [TILE, TILE]}
    write_checkpoint(out, hf_config, path, max_shard_bytes)
