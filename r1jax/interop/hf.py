"""Hugging Face checkpoints (config.json + *.safetensors): the public entry point.

    cfg, params = hf.load_checkpoint("path/to/DeepSeek-V3")       # a ModelConfig
    cfg, params = hf.load_checkpoint("path/to/R1-Distill-Qwen")   # a Qwen2Config
    hf.save_checkpoint(cfg, params, "out/")                       # transformers loads it

Loading reads config.json once and dispatches on its `model_type`; saving dispatches on the config
type. Each architecture lives in its own module over the shared layer checkpoint_io.py:
    deepseek_v3.py (+ deepseek_v3_config.py)   DeepSeek-V3 family, the released FP8 format,
                                               weights kept in E4M3 (`keep_fp8=True`)
    qwen2.py (+ qwen2_config.py)               Qwen2 (the dense R1-Distill students)
Architecture modules never import this one.
"""

from __future__ import annotations

import os

import numpy as np

from r1jax.config import ModelConfig
from r1jax.interop import deepseek_v3, qwen2
from r1jax.interop.checkpoint_io import dequantize_block_fp8, quantize_block_fp8, read_config_json
from r1jax.models.qwen2 import Qwen2Config

# config.json `model_type` -> module. DeepSeek-V2 configs use the same keys and parser; a
# config.json without model_type (hand-written) is read as DeepSeek-V3, the default family.
_BY_MODEL_TYPE = {"deepseek_v3": deepseek_v3, "deepseek_v2": deepseek_v3, None: deepseek_v3,
                  "qwen2": qwen2}
_BY_CONFIG_TYPE = {ModelConfig: deepseek_v3, Qwen2Config: qwen2}


def _architecture_of(hf_config: dict, path: str):
    model_type = hf_config.get("model_type")
    if model_type not in _BY_MODEL_TYPE:
        supported = sorted(k for k in _BY_MODEL_TYPE if k)
        raise ValueError(f"{os.path.join(path, 'config.json')}: model_type={model_type!r} is not "
                         f"supported (supported: {supported})")
    return _BY_MODEL_TYPE[model_type]


def _module_for(cfg):
    for config_type, module in _BY_CONFIG_TYPE.items():
        if isinstance(cfg, config_type):
            return module
    raise TypeError(f"no Hugging Face architecture for a {type(cfg).__name__}; pass a ModelConfig "
                    f"(DeepSeek-V3) or a Qwen2Config")


def load_checkpoint(path: str, *, keep_fp8: bool = False, **config_overrides):
    """(cfg, params) from a HF checkpoint directory: a ModelConfig for DeepSeek-V3 checkpoints, a
    Qwen2Config for `model_type: "qwen2"`. Params are numpy-backed jax arrays of cfg.param_dtype
    (float32 unless overridden). `keep_fp8=True` (DeepSeek-V3, with precision="fp8_v3") keeps
    the FP8 projections in E4M3: see `deepseek_v3.load_checkpoint` for which ones and why."""
    hf_config = read_config_json(path)
    return _architecture_of(hf_config, path).load_checkpoint(path, hf_config, keep_fp8=keep_fp8,
                                                             **config_overrides)


def save_checkpoint(cfg, params: dict, path: str, *, dtype: str = "float32", fp8: bool = False,
                    max_shard_bytes: int = 4 << 30) -> None:
    """Write config.json + safetensors that `transformers` loads (dtype float32 or bfloat16): a
    DeepseekV3ForCausalLM for a ModelConfig, a Qwen2ForCausalLM for a Qwen2Config. With fp8=True
    (DeepSeek-V3 only) projections are stored in the released E4M3 128x128-block format."""
    _module_for(cfg).save_checkpoint(cfg, params, path, dtype=dtype, fp8=fp8,
                                     max_shard_bytes=max_shard_bytes)


def params_to_hf(cfg, params: dict) -> dict[str, np.ndarray]:
    """Our params as HF-named float32 numpy tensors in HF's layouts."""
    return _module_for(cfg).params_to_hf(cfg, params)


__all__ = ["dequantize_block_fp8", "load_checkpoint", "params_to_hf", "quantize_block_fp8",
           "save_checkpoint"]
