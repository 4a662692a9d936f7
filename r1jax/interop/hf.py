"""Load and save Hugging Face DeepSeek-V3 checkpoints (config.json + *.safetensors).

Handles bf16/fp32 weights, the released FP8 format (E4M3 weights with a float32
`weight_scale_inv` per 128x128 block), per-expert and fused expert layouts, and the MTP layers
that the released weights store as `model.layers.{num_hidden_layers + k}`.
Qwen2 checkpoints (`model_type: "qwen2"`, a `Qwen2Config`) are handed to `hf_qwen2`.
Our params keep weights as (in, out) with heads as their own axis; HF stores (out, in).

By default FP8 tensors are dequantized to float params. `load_checkpoint(path, keep_fp8=True,
precision="fp8_v3")` instead keeps each FP8 weight that the model computes on as one fp8_v3
projection of the very HF matrix as a 128x128 `QuantizedArray` (K=in, N=out): the E4M3 bytes and
`weight_scale_inv` are transposed, never converted (see `load_checkpoint` for which weights).
"""

from __future__ import annotations

import json
import os
import warnings

import jax
import ml_dtypes
import numpy as np

from r1jax.config import ModelConfig
from r1jax.interop.hf_config import from_hf_config, to_hf_config
from r1jax.interop.safetensors_io import open_checkpoint, save_sharded
from r1jax.nn.fp8_quant import QuantizedArray, dequantize, from_weight_scale_inv

FP8_BLOCK = 128
E4M3_MAX = 448.0

# (our path inside a decoder block, HF name suffix, layout kind)
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
_EXPERT_PROJ = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
# With keep_fp8: the weights whose forward is one fp8_v3 `project` on the HF matrix transposed,
# heads flattened exactly as HF flattens them, so the HF 128x128 block grid is our block grid.
# Not here: kv_b (split per head into W_UK / W_UV and used by the absorbed decode einsums),
# eh_proj (a plain einsum in the MTP module), the router (FP32 gate, not FP8 in the checkpoints).
_KEPT_FP8 = {("attn", "q_a"), ("attn", "q_b"), ("attn", "q_proj"), ("attn", "kv_a"), ("attn", "o"),
             ("mlp", "gate"), ("mlp", "up"), ("mlp", "down"),
             ("moe", "shared", "gate"), ("moe", "shared", "up"), ("moe", "shared", "down")}


def _to_ours(x: np.ndarray, kind: str, shape) -> np.ndarray:
    return x if kind == "id" else x.T.reshape(shape)


def _to_hf(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "id":
        return x
    if kind == "heads":  # (in, H, k) -> (H*k, in)
        return x.reshape(x.shape[0], -1).T
    return x.reshape(-1, x.shape[-1]).T  # "T": (in, out) -> (out, in); "o": (H, v, D) -> (D, H*v)


def dequantize_block_fp8(w: np.ndarray, scale_inv: np.ndarray, block: int = FP8_BLOCK) -> np.ndarray:
    """Released FP8 format: weight (out, in) E4M3 times scale_inv[i // 128, j // 128]."""
    out_dim, in_dim = w.shape
    expected = (-(-out_dim // block), -(-in_dim // block))
    if scale_inv.shape != expected:
        raise ValueError(f"weight_scale_inv shape {scale_inv.shape} does not match weight {w.shape} "
                         f"with {block}x{block} blocks (expected {expected})")
    scale = np.repeat(np.repeat(scale_inv.astype(np.float32), block, 0), block, 1)[:out_dim, :in_dim]
    return w.astype(np.float32) * scale


def quantize_block_fp8(w: np.ndarray, block: int = FP8_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float -> (E4M3 weight, float32 scale_inv per 128x128 block), amax/448 scaling."""
    out_dim, in_dim = w.shape
    bo, bi = -(-out_dim // block), -(-in_dim // block)
    padded = np.zeros((bo * block, bi * block), np.float32)
    padded[:out_dim, :in_dim] = w
    blocks = padded.reshape(bo, block, bi, block)
    scale = np.maximum(np.abs(blocks).max(axis=(1, 3)), 1e-4) / E4M3_MAX  # (bo, bi)
    q = (blocks / scale[:, None, :, None]).reshape(padded.shape)[:out_dim, :in_dim]
    return q.astype(ml_dtypes.float8_e4m3fn), scale.astype(np.float32)


class _Reader:
    """Reads HF tensors by name, dequantizing FP8 ones (or keeping them, `get_kept`), and records
    what was consumed."""

    def __init__(self, where):
        self.where, self.used = where, set()

    def has(self, name: str) -> bool:
        return name in self.where

    def _raw(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(tensor as stored, its weight_scale_inv if it is FP8 else None)."""
        if name not in self.where:
            raise ValueError(f"checkpoint is missing tensor {name!r} that config.json implies")
        self.used.add(name)
        x = self.where[name].get(name)
        if x.dtype not in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
            return x, None
        scale_name = name.removesuffix(".weight") + ".weight_scale_inv"
        if scale_name not in self.where:
            raise ValueError(f"FP8 tensor {name!r} has no {scale_name!r} in the checkpoint")
        self.used.add(scale_name)
        return x, self.where[scale_name].get(scale_name)

    def get(self, name: str) -> np.ndarray:
        x, scale_inv = self._raw(name)
        return np.asarray(x, np.float32) if scale_inv is None else dequantize_block_fp8(x, scale_inv)

    def _check_shape(self, name, x_shape, kind, shape):
        hf_shape = _to_hf(np.empty(shape, np.bool_), kind).shape
        if tuple(x_shape) != hf_shape:
            raise ValueError(f"{self.where[name].path}: tensor {name} has shape {tuple(x_shape)}, "
                             f"but config.json implies {hf_shape}")

    def get_shaped(self, name, kind, shape):
        x = self.get(name)
        self._check_shape(name, x.shape, kind, shape)
        return _to_ours(x, kind, shape)

    def get_kept(self, name, kind, shape) -> np.ndarray | QuantizedArray:
        """An E4M3 (out, in) weight as a 128x128 QuantizedArray (in, out), its bytes and block
        scales transposed, not converted; a float (or E5M2) tensor as `get_shaped` gives it."""
        x, scale_inv = self._raw(name)
        self._check_shape(name, x.shape, kind, shape)
        if scale_inv is None or x.dtype != ml_dtypes.float8_e4m3fn:
            x = x if scale_inv is None else dequantize_block_fp8(x, scale_inv)
            return _to_ours(np.asarray(x, np.float32), kind, shape)
        return from_weight_scale_inv(jax.numpy.asarray(x), jax.numpy.asarray(scale_inv))  # (in, out)


def _load_block(r: _Reader, prefix: str, abstract: dict, keep_fp8: bool) -> dict:
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
        return QuantizedArray(jax.numpy.stack([w.values for w in ws]),  # (E, Kp, Np)
                              jax.numpy.stack([w.scales for w in ws]),  # (E, Kp/128, Np/128)
                              (len(ws), *ws[0].shape), ws[0].tile)
    return np.stack([np.asarray(dequantize(w)) if isinstance(w, QuantizedArray) else w for w in ws])


def _load_experts(r: _Reader, prefix: str, abstract: dict, keep_fp8: bool) -> dict:
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


def load_checkpoint(path: str, *, keep_fp8: bool = False, **config_overrides) -> tuple[ModelConfig, dict]:
    """(cfg, params) from a HF checkpoint directory; params are float32 numpy-backed jax arrays
    unless `param_dtype` is overridden. A `model_type: "qwen2"` checkpoint gives a Qwen2Config.

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
    from r1jax.interop import hf_qwen2  # it reuses this module's reader
    from r1jax.models import abstract_params  # models import interop-free modules only

    if hf_qwen2.is_qwen2_checkpoint(path):
        if keep_fp8:
            raise ValueError(f"{path}: keep_fp8=True is for DeepSeek-V3 checkpoints, not Qwen2; "
                             f"load it with keep_fp8=False")
        return hf_qwen2.load_checkpoint(path, **config_overrides)

    cfg = from_hf_config(path, **config_overrides)
    if keep_fp8 and cfg.precision != "fp8_v3":
        raise ValueError(f"keep_fp8=True keeps E4M3 weights that only precision='fp8_v3' computes "
                         f"on, but the config has precision={cfg.precision!r}: pass "
                         f"precision='fp8_v3', or keep_fp8=False to dequantize")
    r = _Reader(open_checkpoint(path))
    present = sum(r.has(f"model.layers.{cfg.num_layers + k}.eh_proj.weight")
                  for k in range(cfg.num_mtp_modules))
    if present < cfg.num_mtp_modules:
        # transformers saves no MTP weights even when config.json keeps num_nextn_predict_layers.
        warnings.warn(f"{path}: config.json declares {cfg.num_mtp_modules} MTP modules but the "
                      f"checkpoint holds {present}; loading without the missing ones", stacklevel=2)
        cfg = cfg.replace(num_mtp_modules=present)
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
        params["mtp"][k] = {key: mod.pop(key) for key in ("enorm", "hnorm", "eh_proj", "head_norm")}
        params["mtp"][k]["block"] = mod
        # The released MTP layers carry copies of the shared embedding and head.
        r.used.update(n for n in (prefix + "embed_tokens.weight", prefix + "shared_head.head.weight")
                      if r.has(n))
    leftover = sorted(set(r.where) - r.used)
    if leftover:
        raise ValueError(f"{path}: {len(leftover)} tensors do not belong to the model config.json "
                         f"describes, e.g. {leftover[:5]}")
    dtype = np.dtype(cfg.param_dtype) if cfg.param_dtype != "bfloat16" else ml_dtypes.bfloat16
    to_param = lambda x: x if isinstance(x, QuantizedArray) else jax.numpy.asarray(np.asarray(x, dtype))
    return cfg, jax.tree.map(to_param, params, is_leaf=lambda x: isinstance(x, QuantizedArray))


def _save_block(block: dict, prefix: str, out: dict) -> None:
    for path, suffix, kind in _BLOCK_TABLE + _MTP_TABLE:
        node = block
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            out[prefix + suffix] = _to_hf(node, kind)
    if "moe" in block:
        for ours, hf in _EXPERT_PROJ.items():
            for i, w in enumerate(block["moe"][ours]):
                out[f"{prefix}mlp.experts.{i}.{hf}.weight"] = w.T


def host_params_and_shared_tensors(cfg, params: dict):
    """(params as float32 numpy, the HF tensors every decoder checkpoint has: embedding, final
    norm and, when untied, the output head)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    out = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]["scale"]}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = p["lm_head"].T
    return p, out


def params_to_hf(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Our params as HF-named (out, in) float32 numpy tensors, MTP layers included."""
    p, out = host_params_and_shared_tensors(cfg, params)
    for i in range(cfg.num_layers):
        _save_block(p["layers"][i], f"model.layers.{i}.", out)
    for k in range(cfg.num_mtp_modules):
        prefix = f"model.layers.{cfg.num_layers + k}."
        mod = p["mtp"][k]
        _save_block({**mod["block"], **{key: mod[key] for key in ("enorm", "hnorm", "eh_proj", "head_norm")}},
                    prefix, out)
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
    With fp8=True, projections are stored in the released E4M3 128x128-block format.
    A Qwen2Config writes a Qwen2ForCausalLM checkpoint."""
    if not isinstance(cfg, ModelConfig):
        from r1jax.interop import hf_qwen2  # it reuses this module's reader

        return hf_qwen2.save_checkpoint(cfg, params, path, dtype=dtype, fp8=fp8,
                                        max_shard_bytes=max_shard_bytes)
    tensors = params_to_hf(cfg, params)
    hf_cfg = to_hf_config(cfg)
    np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
    out = {}
    for name, x in tensors.items():
        if fp8 and _is_fp8_linear(name) and x.ndim == 2:
            out[name], out[name + "_scale_inv"] = quantize_block_fp8(x)
        elif name.endswith("e_score_correction_bias"):
            out[name] = x.astype(np.float32)  # kept in fp32 like the reference
        else:
            out[name] = x.astype(np_dtype)
    hf_cfg["torch_dtype"] = dtype
    if fp8:
        hf_cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                         "activation_scheme": "dynamic",
                                         "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    save_sharded(out, path, max_shard_bytes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
