"""Llama 3.x: the dense student architecture of DeepSeek-R1-Distill-Llama [R1 §2.4].

The model is the shared dense decoder (dense.py) without q/k/v biases and with Llama 3.1's RoPE
frequency scaling (`rope_scaling`, HF rope_type "llama3"); this module holds the Llama config and
its named sizes.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from r1jax.models.dense import DenseConfig
from r1jax.nn.rope import Llama3RopeScaling

# Llama 3.1 stretches an 8192-token pretraining context 8x; Llama 3.2 (1B, 3B) 32x.
LLAMA_3_1_ROPE = Llama3RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                   original_max_position_embeddings=8192)
LLAMA_3_2_ROPE = dataclasses.replace(LLAMA_3_1_ROPE, factor=32.0)


@dataclasses.dataclass(frozen=True)
class LlamaConfig(DenseConfig):
    """Shapes and options of a Llama 3.x dense transformer (defaults: Llama 3.2 1B)."""

    qkv_bias: ClassVar[bool] = False

    vocab_size: int = 128256
    hidden_size: int = 2048
    num_layers: int = 16
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 64
    intermediate_size: int = 8192
    rope_theta: float = 500000.0
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    rope_scaling: Llama3RopeScaling | None = LLAMA_3_2_ROPE


def tiny(**kw) -> LlamaConfig:
    """Runs in seconds on CPU; vocab 512 shares the project tokenizer. GQA 4 heads / 2 kv heads,
    the shapes of qwen2.tiny, with Llama 3 RoPE scaling (factor 2 over a 128-token original
    context: the long wavelengths stretched, the short ones kept)."""
    base = LlamaConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       head_dim=16, intermediate_size=128, rope_theta=10000.0,
                       max_position_embeddings=256, tie_word_embeddings=False,
                       rope_scaling=Llama3RopeScaling(factor=2.0, original_max_position_embeddings=128),
                       scan_layers=False)  # CPU size: unrolled compiles faster (config.tiny)
    return base.replace(**kw)


def llama3_2_1b(**kw) -> LlamaConfig:
    """Llama 3.2 1B (1.24B params; tied head)."""
    return LlamaConfig().replace(**kw)


def llama3_1_8b(**kw) -> LlamaConfig:
    """Llama 3.1 8B (8.03B params; the base of DeepSeek-R1-Distill-Llama-8B)."""
    base = LlamaConfig(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                       intermediate_size=14336, tie_word_embeddings=False,
                       rope_scaling=LLAMA_3_1_ROPE)
    return base.replace(**kw)


SIZES = {"tiny": tiny, "llama3_2_1b": llama3_2_1b, "llama3_1_8b": llama3_1_8b}


def get_llama_config(name: str, **kw) -> LlamaConfig:
    if name not in SIZES:
        raise ValueError(f"unknown Llama size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name](**kw)
