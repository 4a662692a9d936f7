"""Qwen2Config <-> Hugging Face `config.json` (Qwen2.5, DeepSeek-R1-Distill-Qwen).

The weights of this architecture are mapped by dense.py, the keys it shares with Llama by
dense_config.py. Keys that change the math and are not implemented (sliding-window attention,
RoPE scaling other than Llama 3's, M-RoPE) raise a ValueError naming the key; keys that only
describe the run are accepted and ignored. Every error names the config.json it was read from (or
"config.json" for a dict).
"""

from __future__ import annotations

import os

from r1jax.interop.checkpoint_io import build_config, read_architecture_config
from r1jax.interop.dense_config import (IGNORED_KEYS, MAPPED_KEYS, REQUIRED_KEYS,
                                        dense_fields_from_hf, dense_fields_to_hf, reject)
from r1jax.models.qwen2 import Qwen2Config

# What config.json says for this architecture (transformers' model_type and class name).
NAME = "Qwen2"
MODEL_TYPES = ("qwen2",)
ARCHITECTURES = ("Qwen2ForCausalLM",)

_QWEN2_KEYS = {"max_window_layers", "sliding_window", "use_sliding_window", "layer_types",
               "use_mrope"}


def from_hf_config(source: str | os.PathLike | dict, *, config_path: str | None = None,
                   **overrides) -> Qwen2Config:
    """A Qwen2Config from a config.json path, a checkpoint directory or a dict (read from
    `config_path`, which errors then name)."""
    hf, where = read_architecture_config(
        source, config_path, name=NAME, model_types=MODEL_TYPES, architectures=ARCHITECTURES,
        known_keys=IGNORED_KEYS | MAPPED_KEYS | _QWEN2_KEYS, required=REQUIRED_KEYS)
    if hf.get("use_sliding_window", False):
        reject(where, "use_sliding_window", hf["use_sliding_window"],
               "sliding-window attention is not implemented")
    sliding = [t for t in hf.get("layer_types") or [] if t != "full_attention"]
    if sliding:
        reject(where, "layer_types", sorted(set(sliding)),
               "only 'full_attention' layers are implemented")
    if hf.get("use_mrope", False):
        reject(where, "use_mrope", hf["use_mrope"], "multimodal RoPE is not implemented")
    return build_config(Qwen2Config, dense_fields_from_hf(hf, where, NAME), where, overrides)


def to_hf_config(cfg: Qwen2Config) -> dict:
    """The config.json that `transformers` Qwen2ForCausalLM loads for this model."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **dense_fields_to_hf(cfg),
        "use_sliding_window": False, "sliding_window": None, "max_window_layers": cfg.num_layers,
        "layer_types": ["full_attention"] * cfg.num_layers,
    }
