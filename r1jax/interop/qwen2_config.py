"""Qwen2Config <-> Hugging Face `config.json` (Qwen2.5, DeepSeek-R1-Distill-Qwen).

The weights of this architecture are mapped by qwen2.py. Keys that change the math and are not
implemented (sliding-window attention, RoPE scaling, M-RoPE) raise a ValueError naming the key;
keys that only describe the run are accepted and ignored. Every error names the config.json it was
read from (or "config.json" for a dict).
"""

from __future__ import annotations

import os

from r1jax.interop.checkpoint_io import build_config, read_architecture_config
from r1jax.models.qwen2 import Qwen2Config

# What config.json says for this architecture (transformers' model_type and class name).
NAME = "Qwen2"
MODEL_TYPES = ("qwen2",)
ARCHITECTURES = ("Qwen2ForCausalLM",)

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
# Mapped keys without a default: the shapes of the model.
_REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size")


def _reject(where: str, key: str, value, why: str) -> None:
    raise ValueError(f"{where}: {key}={value!r} is not supported ({why})")


def from_hf_config(source: str | os.PathLike | dict, *, config_path: str | None = None,
                   **overrides) -> Qwen2Config:
    """A Qwen2Config from a config.json path, a checkpoint directory or a dict (read from
    `config_path`, which errors then name)."""
    hf, where = read_architecture_config(
        source, config_path, name=NAME, model_types=MODEL_TYPES, architectures=ARCHITECTURES,
        known_keys=_IGNORED_KEYS | _MAPPED_KEYS, required=_REQUIRED_KEYS)
    if hf.get("hidden_act", "silu") != "silu":
        _reject(where, "hidden_act", hf["hidden_act"], "supported: 'silu'")
    if hf.get("use_sliding_window", False):
        _reject(where, "use_sliding_window", hf["use_sliding_window"],
                "sliding-window attention is not implemented")
    sliding = [t for t in hf.get("layer_types") or [] if t != "full_attention"]
    if sliding:
        _reject(where, "layer_types", sorted(set(sliding)),
                "only 'full_attention' layers are implemented")
    if hf.get("use_mrope", False):
        _reject(where, "use_mrope", hf["use_mrope"], "multimodal RoPE is not implemented")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in (None, "default"):
        _reject(where, "rope_scaling.rope_type", kind,
                "supported: 'default'; YaRN/dynamic scaling is not implemented")
    if rope.get("partial_rotary_factor") not in (None, 1.0):
        _reject(where, "rope_scaling.partial_rotary_factor", rope["partial_rotary_factor"],
                "supported: 1.0")
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
    return build_config(Qwen2Config, kw, where, overrides)


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
