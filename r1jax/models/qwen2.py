"""Qwen2 / Qwen2.5: the dense student architecture of DeepSeek-R1-Distill-Qwen [R1 §2.4].

The model is the shared dense decoder (dense.py) with biases on q, k and v; this module holds the
Qwen2 config, its named sizes, and the names the rest of the code knows it by.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from r1jax.models.dense import (  # the Qwen2 names of the shared decoder
    ACTIVATION_AXES,
    Block,
    DenseConfig,
    DenseDecoder,
    GQAttention,
    abstract_params,
    bind,
    count_params,
    forward,
    init,
    init_cache,
    mtp_depth,
    param_axes,
    param_roles,
    train_flops_per_token,
    update_routing_biases,
)

Qwen2 = DenseDecoder  # the NNX module, as it was first named

__all__ = ["ACTIVATION_AXES", "SIZES", "Block", "GQAttention", "Qwen2", "Qwen2Config",
           "abstract_params", "bind", "count_params", "forward", "get_qwen2_config", "init",
           "init_cache", "mtp_depth", "param_axes", "param_roles", "qwen2_5_1_5b", "qwen2_5_7b",
           "tiny", "train_flops_per_token", "update_routing_biases"]


@dataclasses.dataclass(frozen=True)
class Qwen2Config(DenseConfig):
    """Shapes and options of a Qwen2-family dense transformer (defaults: Qwen2.5-1.5B)."""

    qkv_bias: ClassVar[bool] = True

    vocab_size: int = 151936
    hidden_size: int = 1536
    num_layers: int = 28
    num_heads: int = 12
    num_kv_heads: int = 2
    head_dim: int = 128
    intermediate_size: int = 8960
    rope_theta: float = 1e6
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True


def tiny(**kw) -> Qwen2Config:
    """Runs in seconds on CPU; vocab 512 shares the project tokenizer. GQA 4 heads / 2 kv heads."""
    base = Qwen2Config(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       head_dim=16, intermediate_size=128, rope_theta=10000.0,
                       max_position_embeddings=256, tie_word_embeddings=False,
                       scan_layers=False)  # CPU size: unrolled compiles faster (config.tiny)
    return base.replace(**kw)


def qwen2_5_1_5b(**kw) -> Qwen2Config:
    """Qwen2.5-1.5B (1.54B params, 1.31B without embedding; tied head)."""
    return Qwen2Config().replace(**kw)


def qwen2_5_7b(**kw) -> Qwen2Config:
    """Qwen2.5-7B (7.61B params, 6.53B without embedding and head)."""
    base = Qwen2Config(vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
                       num_kv_heads=4, head_dim=128, intermediate_size=18944,
                       tie_word_embeddings=False)
    return base.replace(**kw)


SIZES = {"tiny": tiny, "qwen2_5_1_5b": qwen2_5_1_5b, "qwen2_5_7b": qwen2_5_7b}


def get_qwen2_config(name: str, **kw) -> Qwen2Config:
    if name not in SIZES:
        raise ValueError(f"unknown Qwen2 size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name](**kw)
