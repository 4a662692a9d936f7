"""LlamaConfig <-> Hugging Face `config.json` (Llama 3.x, DeepSeek-R1-Distill-Llama).

The weights of this architecture are mapped by dense.py, the keys it shares with Qwen2 by
dense_config.py (Llama 3.1's `rope_scaling` included). Llama 3 ships without biases: a
config.json with `attention_bias` or `mlp_bias` true raises a ValueError naming the key, as do
other math-changing keys that are not implemented; keys that only describe the run are accepted
and ignored. Every error names the config.json it was read from (or "config.json" for a dict).
"""

from __future__ import annotations

import os

from r1jax.interop.checkpoint_io import build_config, read_architecture_config
from r1jax.interop.dense_config import (IGNORED_KEYS, MAPPED_KEYS, REQUIRED_KEYS,
                                        dense_fields_from_hf, dense_fields_to_hf, reject)
from r1jax.models.llama import LlamaConfig

# What config.json says for this architecture (transformers' model_type and class name).
NAME = "Llama"
MODEL_TYPES = ("llama",)
ARCHITECTURES = ("LlamaForCausalLM",)

# pretraining_tp only sliced the projections of Llama 2's reference code (same math).
_LLAMA_KEYS = {"attention_bias", "mlp_bias", "pretraining_tp"}


def from_hf_config(source: str | os.PathLike | dict, *, config_path: str | None = None,
                   **overrides) -> LlamaConfig:
    """A LlamaConfig from a config.json path, a checkpoint directory or a dict (read from
    `config_path`, which errors then name)."""
    hf, where = read_architecture_config(
        source, config_path, name=NAME, model_types=MODEL_TYPES, architectures=ARCHITECTURES,
        known_keys=IGNORED_KEYS | MAPPED_KEYS | _LLAMA_KEYS, required=REQUIRED_KEYS)
    for key, what in (("attention_bias", "q/k/v/o projection biases"),
                      ("mlp_bias", "gate/up/down projection biases")):
        if hf.get(key, False):
            reject(where, key, hf[key], f"{what} are not implemented; Llama 3 ships {key}=false")
    return build_config(LlamaConfig, dense_fields_from_hf(hf, where, NAME), where, overrides)


def to_hf_config(cfg: LlamaConfig) -> dict:
    """The config.json that `transformers` LlamaForCausalLM loads for this model."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **dense_fields_to_hf(cfg),
            "attention_bias": False, "mlp_bias": False}
