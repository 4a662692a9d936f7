"""Load and save Hugging Face Qwen2 checkpoints (Qwen2.5, DeepSeek-R1-Distill-Qwen).

`r1jax.interop.hf.load_checkpoint` / `save_checkpoint` come here for `model_type: "qwen2"` and
for a `Qwen2Config`. Our params keep weights as (in, out) with heads as their own axis; HF
stores (out, in) and flat (H * Dh,) biases. Keys that change the math and are not implemented
(sliding-window attention, RoPE scaling, M-RoPE) raise a ValueError naming the key.
"""

from __future__ import annotations

import json
import os
import warnings

import jax
import ml_dtypes
import numpy as np

from r1jax.interop.hf import _Reader, _to_hf, host_params_and_shared_tensors
from r1jax.interop.safetensors_io import open_checkpoint, save_sharded
from r1jax.models import qwen2
from r1jax.models.qwen2 import Qwen2Config

# Keys that carry no math for the forward pass (or are checked below).
_IGNORED_KEYS = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "bos_token_id",
    "eos_token_id", "pad_token_id", "use_cache", "initializer_range", "attention_dropout",
    "_name_or_path", "return_dict", "output_hidden_states", "output_attentions", "id2label",
    "label2id", "tokenizer_class", "max_window_layers", "sliding_window",
}
_MAPPED_KEYS = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "rope_theta", "rope_scaling", "rope_parameters",
    "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "hidden_act",
    "use_sliding_window", "layer_types", "use_mrope",
}

# (our path inside a decoder block, HF name, layout kind); "bias": (N, Dh) <-> (N * Dh,).
_BLOCK_TABLE = [
    (("attn_norm", "scale"), "input_layernorm.weight", "id"),
    (("attn", "q"), "self_attn.q_proj.weight", "heads"),
    (("attn", "q_bias"), "self_attn.q_proj.bias", "bias"),
    (("attn", "k"), "self_attn.k_proj.weight", "heads"),
    (("attn", "k_bias"), "self_attn.k_proj.bias", "bias"),
    (("attn", "v"), "self_attn.v_proj.weight", "heads"),
    (("attn", "v_bias"), "self_attn.v_proj.bias", "bias"),
    (("attn", "o"), "self_attn.o_proj.weight", "o"),
    (("ffn_norm", "scale"), "post_attention_layernorm.weight", "id"),
    (("mlp", "gate"), "mlp.gate_proj.weight", "T"),
    (("mlp", "up"), "mlp.up_proj.weight", "T"),
    (("mlp", "down"), "mlp.down_proj.weight", "T"),
]


def read_hf_config(source: str | os.PathLike | dict) -> dict:
    if isinstance(source, dict):
        return dict(source)
    path = os.path.join(source, "config.json") if os.path.isdir(source) else source
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json at {path}")
    with open(path) as f:
        return json.load(f)


def is_qwen2_checkpoint(path: str | os.PathLike) -> bool:
    """True when `path`'s config.json says model_type "qwen2" (False when there is none)."""
    config_path = os.path.join(path, "config.json")
    return os.path.exists(config_path) and read_hf_config(config_path).get("model_type") == "qwen2"


def _reject(key: str, value, why: str) -> None:
    raise ValueError(f"config.json: {key}={value!r} is not supported ({why})")


def from_hf_config(source: str | os.PathLike | dict, **overrides) -> Qwen2Config:
    """A Qwen2Config from a config.json path, a checkpoint directory or a dict."""
    hf = read_hf_config(source)
    unknown = set(hf) - _IGNORED_KEYS - _MAPPED_KEYS
    if unknown:
        warnings.warn(f"config.json: ignoring keys {sorted(unknown)}", stacklevel=2)
    if hf.get("hidden_act", "silu") != "silu":
        _reject("hidden_act", hf["hidden_act"], "supported: 'silu'")
    if hf.get("use_sliding_window", False):
        _reject("use_sliding_window", hf["use_sliding_window"],
                "sliding-window attention is not implemented")
    sliding = [t for t in hf.get("layer_types") or [] if t != "full_attention"]
    if sliding:
        _reject("layer_types", sorted(set(sliding)), "only 'full_attention' layers are implemented")
    if hf.get("use_mrope", False):
        _reject("use_mrope", hf["use_mrope"], "multimodal RoPE is not implemented")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in (None, "default"):
        _reject("rope_scaling.rope_type", kind,
                "supported: 'default'; YaRN/dynamic scaling is not implemented")
    if rope.get("partial_rotary_factor") not in (None, 1.0):
        _reject("rope_scaling.partial_rotary_factor", rope["partial_rotary_factor"], "supported: 1.0")
    heads = hf["num_attention_heads"]
    kw = dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        intermediate_size=hf["intermediate_size"],
        rope_theta=float(rope.get("rope_theta") or hf.get("rope_theta", 10000.0)),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )
    kw.update(overrides)
    return Qwen2Config(**kw)


def to_hf_config(cfg: Qwen2Config) -> dict:
    """The config.json that `transformers` Qwen2ForCausalLM loads for this model."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings, "hidden_act": "silu",
        "use_sliding_window": False, "sliding_window": None, "max_window_layers": cfg.num_layers,
        "layer_types": ["full_attention"] * cfg.num_layers, "torch_dtype": cfg.param_dtype,
    }


def _get(r: _Reader, name: str, kind: str, shape) -> np.ndarray:
    if kind != "bias":
        return r.get_shaped(name, kind, shape)
    x = r.get(name)
    if x.shape != (int(np.prod(shape)),):
        raise ValueError(f"{r.where[name].path}: tensor {name} has shape {x.shape}, "
                         f"but config.json implies {(int(np.prod(shape)),)}")
    return x.reshape(shape)


def load_checkpoint(path: str, **config_overrides) -> tuple[Qwen2Config, dict]:
    """(cfg, params) from a HF Qwen2 checkpoint directory, cast to cfg.param_dtype."""
    cfg = from_hf_config(path, **config_overrides)
    r = _Reader(open_checkpoint(path))
    abstract = qwen2.abstract_params(cfg)
    layers = {}
    for i in range(cfg.num_layers):
        layer = {}
        for (group, leaf), suffix, kind in _BLOCK_TABLE:
            shape = abstract["layers"][i][group][leaf].shape
            layer.setdefault(group, {})[leaf] = _get(r, f"model.layers.{i}.{suffix}", kind, shape)
        layers[i] = layer
    params = {"embed": r.get_shaped("model.embed_tokens.weight", "id", abstract["embed"].shape),
              "final_norm": {"scale": r.get_shaped("model.norm.weight", "id", (cfg.hidden_size,))},
              "layers": layers}
    if not cfg.tie_word_embeddings:
        params["lm_head"] = r.get_shaped("lm_head.weight", "T", abstract["lm_head"].shape)
    elif r.has("lm_head.weight"):
        r.used.add("lm_head.weight")  # some tied checkpoints store a copy; transformers ignores it
    leftover = sorted(set(r.where) - r.used)
    if leftover:
        raise ValueError(f"{path}: {len(leftover)} tensors do not belong to the model config.json "
                         f"describes, e.g. {leftover[:5]}")
    dtype = np.dtype(cfg.param_dtype) if cfg.param_dtype != "bfloat16" else ml_dtypes.bfloat16
    return cfg, jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x, dtype)), params)


def params_to_hf(cfg: Qwen2Config, params: dict) -> dict[str, np.ndarray]:
    """Our params as HF-named (out, in) float32 numpy tensors."""
    p, out = host_params_and_shared_tensors(cfg, params)
    for i in range(cfg.num_layers):
        for (group, leaf), suffix, kind in _BLOCK_TABLE:
            x = p["layers"][i][group][leaf]
            out[f"model.layers.{i}.{suffix}"] = x.reshape(-1) if kind == "bias" else _to_hf(x, kind)
    return out


def save_checkpoint(cfg: Qwen2Config, params: dict, path: str, *, dtype: str = "float32",
                    fp8: bool = False, max_shard_bytes: int = 4 << 30) -> None:
    """Write config.json + safetensors that `transformers` Qwen2ForCausalLM loads."""
    if fp8:
        raise ValueError("fp8=True writes the DeepSeek-V3 release format; Qwen2 checkpoints are "
                         "stored in float32 or bfloat16 (pass dtype=)")
    np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
    tensors = {name: x.astype(np_dtype) for name, x in params_to_hf(cfg, params).items()}
    hf_cfg = to_hf_config(cfg)
    hf_cfg["torch_dtype"] = dtype
    save_sharded(tensors, path, max_shard_bytes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
