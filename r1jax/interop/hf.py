"""Hugging Face checkpoints (config.json + *.safetensors): the public entry point.

    cfg, params = hf.load_checkpoint("path/to/DeepSeek-V3")       # a ModelConfig
    cfg, params = hf.load_checkpoint("path/to/R1-Distill-Qwen")   # a Qwen2Config
    cfg, params = hf.load_checkpoint("path/to/R1-Distill-Llama")  # a LlamaConfig
    hf.save_checkpoint(cfg, params, "out/")                       # transformers loads it

Loading reads config.json once and dispatches on its `model_type` (or, without one, on its
`architectures`); saving dispatches on the config type. Each architecture lives in its own module
over the shared layer checkpoint_io.py:
    deepseek_v3.py (+ deepseek_v3_config.py)   DeepSeek-V3 family, the released FP8 format,
                                               weights kept in E4M3 (`keep_fp8=True`)
    qwen2.py (+ qwen2_config.py)               Qwen2 and Llama 3.x (the dense R1-Distill
    llama.py (+ llama_config.py)               students): one tensor mapping, dense.py, and
                                               the config.json keys they share, dense_config.py
Architecture modules never import this one.
"""

from __future__ import annotations

import numpy as np

from r1jax.config import ModelConfig
from r1jax.interop import deepseek_v3, deepseek_v3_config, llama, llama_config, qwen2, qwen2_config
from r1jax.interop.checkpoint_io import (
    config_json_path,
    dequantize_block_fp8,
    quantize_block_fp8,
    read_config_json,
)
from r1jax.models.llama import LlamaConfig
from r1jax.models.qwen2 import Qwen2Config

# (architecture module, its config.json module): each config module names the `model_type`s and
# `architectures` it reads. A config.json with neither (hand-written) is read as DeepSeek-V3, the
# default family.
_ARCHITECTURES = ((deepseek_v3, deepseek_v3_config), (qwen2, qwen2_config), (llama, llama_config))
_BY_MODEL_TYPE = {t: arch for arch, fmt in _ARCHITECTURES for t in fmt.MODEL_TYPES}
_BY_CLASS_NAME = {c: arch for arch, fmt in _ARCHITECTURES for c in fmt.ARCHITECTURES}
_BY_CONFIG_TYPE = {ModelConfig: deepseek_v3, Qwen2Config: qwen2, LlamaConfig: llama}
# Model config fields that no config.json holds: how a run computes and initialises, not what the
# checkpoint is. A run started from a checkpoint may set them; every other field is config.json's.
RUN_OPTIONS = ("init_std", "precision", "dtype", "param_dtype", "kernels", "seq_aux_alpha",
               "bias_update_speed", "scan_layers")


def _architecture_of(hf_config: dict, path: str):
    """The module for config.json's `model_type` (as transformers' AutoConfig dispatches), or,
    without one, for its `architectures`."""
    model_type, classes = hf_config.get("model_type"), hf_config.get("architectures") or []
    if model_type is not None:
        if model_type not in _BY_MODEL_TYPE:
            raise ValueError(f"{config_json_path(path)}: model_type={model_type!r} is not "
                             f"supported (supported: {sorted(_BY_MODEL_TYPE)})")
        return _BY_MODEL_TYPE[model_type]
    known = [c for c in classes if c in _BY_CLASS_NAME]
    if classes and not known:
        raise ValueError(f"{config_json_path(path)}: architectures={classes!r} (and no model_type) "
                         f"is not supported (supported: {sorted(_BY_CLASS_NAME)}); set model_type "
                         f"to one of {sorted(_BY_MODEL_TYPE)} if the weights are one of these")
    return _BY_CLASS_NAME[known[0]] if known else deepseek_v3


def _module_for(cfg):
    for config_type, module in _BY_CONFIG_TYPE.items():
        if isinstance(cfg, config_type):
            return module
    raise TypeError(f"no Hugging Face architecture for a {type(cfg).__name__}; pass a ModelConfig "
                    f"(DeepSeek-V3), a Qwen2Config or a LlamaConfig")


def load_checkpoint(path: str, *, keep_fp8: bool = False, **config_overrides):
    """(cfg, params) from a HF checkpoint directory: a ModelConfig for DeepSeek-V3 checkpoints, a
    Qwen2Config for `model_type: "qwen2"`, a LlamaConfig for `model_type: "llama"`. Params are
    numpy-backed jax arrays of cfg.param_dtype (float32 unless overridden). `keep_fp8=True` (DeepSeek-V3, with precision="fp8_v3") keeps
    the FP8 projections in E4M3: see `deepseek_v3.load_checkpoint` for which ones and why."""
    hf_config = read_config_json(path)
    return _architecture_of(hf_config, path).load_checkpoint(path, hf_config, keep_fp8=keep_fp8,
                                                             **config_overrides)


def read_model_config(path: str, **config_overrides):
    """The model config `load_checkpoint(path)` returns, from config.json and the tensor names
    alone (no weights read): what a run started from this directory trains."""
    hf_config = read_config_json(path)
    architecture = _architecture_of(hf_config, path)
    if architecture is deepseek_v3:
        return deepseek_v3.model_config(path, hf_config, **config_overrides)
    config_format = dict(_ARCHITECTURES)[architecture]
    return config_format.from_hf_config(hf_config, config_path=config_json_path(path),
                                        **config_overrides)


def save_checkpoint(cfg, params: dict, path: str, *, dtype: str = "float32", fp8: bool = False,
                    max_shard_bytes: int = 4 << 30) -> None:
    """Write config.json + safetensors that `transformers` loads (dtype float32 or bfloat16): a
    DeepseekV3ForCausalLM for a ModelConfig, a Qwen2ForCausalLM for a Qwen2Config, a
    LlamaForCausalLM for a LlamaConfig. With fp8=True (DeepSeek-V3 only) projections are stored
    in the released E4M3 128x128-block format."""
    _module_for(cfg).save_checkpoint(cfg, params, path, dtype=dtype, fp8=fp8,
                                     max_shard_bytes=max_shard_bytes)


def params_to_hf(cfg, params: dict) -> dict[str, np.ndarray]:
    """Our params as HF-named float32 numpy tensors in HF's layouts."""
    return _module_for(cfg).params_to_hf(cfg, params)


__all__ = ["RUN_OPTIONS", "dequantize_block_fp8", "load_checkpoint", "params_to_hf",
           "quantize_block_fp8", "read_model_config", "save_checkpoint"]
