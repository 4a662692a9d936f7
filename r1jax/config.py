"""Typed model configuration and the named sizes.

`ModelConfig` is the single description of a DeepSeek-V3-family model. It converts to and from a
Hugging Face `config.json` (`from_hf_config` / `to_hf_config`); keys that would change the math in
a way this code does not implement raise a `ValueError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal


# ModelConfig.kernels: XLA; the Mosaic GPU kernels compiled for Hopper; or interpreted; or XLA's
# plain formulations (dense masked softmax, lax.ragged_dot) as the baseline (r1jax/nn/kernels.py).
KERNEL_CHOICES = ("xla", "pallas", "pallas_interpret", "xla_reference")


@dataclasses.dataclass(frozen=True)
class YarnConfig:
    """YaRN context extension (applied to the decoupled RoPE dims only) [V3 §4.3]."""

    factor: float = 40.0
    original_max_position_embeddings: int = 4096
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 1.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and options of a DeepSeek-V3-style MoE transformer with MLA."""

    vocab_size: int = 129280
    hidden_size: int = 7168
    num_layers: int = 61
    num_heads: int = 128
    # MLA [V3 eqs. 1-11]. q_lora_rank=None means a plain q projection (DeepSeek-V2-Lite).
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    # FFN: the first `first_k_dense` layers are dense, the rest DeepSeekMoE [V3 eq. 12].
    intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    first_k_dense: int = 3
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    scoring_func: Literal["sigmoid", "softmax"] = "sigmoid"
    # "noaux_tc": selection on scores + correction bias (V3); "greedy": plain top-k (V2-Lite).
    topk_method: Literal["noaux_tc", "greedy", "group_limited_greedy"] = "noaux_tc"
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 2.5
    # Sequence-wise balance loss weight alpha [V3 §4.2: 1e-4] and bias update speed gamma.
    seq_aux_alpha: float = 1e-4
    bias_update_speed: float = 1e-3
    # Multi-token prediction [V3 §2.2]: D modules.
    num_mtp_modules: int = 1
    # RoPE.
    rope_theta: float = 10000.0
    rope_interleave: bool = True  # released weights store rope dims as interleaved pairs
    yarn: YarnConfig | None = YarnConfig()
    max_position_embeddings: int = 163840
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    init_std: float = 0.006  # every learnable weight ~ N(0, 0.006^2) [V3 §4.2]
    # Projection precision [V3 §3.3]: "bf16" (plain matmul in `dtype`), "fp8_v3" (1x128 / 128x128
    # E4M3 tiles, FP32 promotion per 128) or "fp8_per_tensor" (the coarse baseline).
    precision: str = "bf16"
    dtype: str = "float32"  # compute dtype of activations; params are stored in param_dtype
    param_dtype: str = "float32"
    # Which implementation runs the expert GEMMs, MLA attention and (under precision="fp8_v3") the
    # block-scaled FP8 GEMM of the dense projections; one of KERNEL_CHOICES, read by
    # r1jax/nn/kernels.py alone. "xla": jnp/lax ops, formulated per backend. "pallas": the bf16
    # Mosaic GPU kernels of pallas_kernels/ compiled for Hopper, where each kernel supports the
    # call, else the same XLA math. "pallas_interpret": those kernels in the Mosaic GPU
    # interpreter, on any backend (tests). "xla_reference": the plain XLA formulations (dense
    # masked softmax, lax.ragged_dot), the baseline of tests and benchmarks.
    # A static jit argument like the whole config, so the choice is part of the jit cache key.
    kernels: str = "xla"
    # Run each run of same-structure layers (the first_k_dense dense ones, then the MoE ones) under
    # one jax.lax.scan, so the program stops growing with depth (r1jax/models/layer_scan.py);
    # False unrolls them in Python (the CPU sizes: XLA:CPU compiles a few unrolled tiny layers
    # faster, see `tiny`). A run option, not in config.json. Params are stored per layer either
    # way, and the two agree to float rounding (tests/models/test_layer_scan.py).
    scan_layers: bool = True

    def __post_init__(self):
        if self.n_routed_experts % self.n_group:
            raise ValueError(
                f"n_routed_experts={self.n_routed_experts} must be divisible by n_group={self.n_group}"
            )
        if self.topk_group > self.n_group:
            raise ValueError(f"topk_group={self.topk_group} must be <= n_group={self.n_group}")
        experts_kept = self.topk_group * (self.n_routed_experts // self.n_group)
        if self.num_experts_per_tok > experts_kept:
            raise ValueError(
                f"num_experts_per_tok={self.num_experts_per_tok} exceeds the {experts_kept} experts "
                f"in the topk_group={self.topk_group} kept groups"
            )
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim={self.qk_rope_head_dim} must be even")
        if self.precision not in ("bf16", "fp8_v3", "fp8_per_tensor"):
            raise ValueError(f"precision={self.precision!r}: choose bf16, fp8_v3 or fp8_per_tensor")
        if self.kernels not in KERNEL_CHOICES:
            raise ValueError(f"kernels={self.kernels!r} must be one of {KERNEL_CHOICES}")
        if self.kernels.startswith("pallas") and self.dtype != "bfloat16":
            raise ValueError(f"kernels={self.kernels!r} runs bf16 kernels: set dtype='bfloat16' "
                             f"(got {self.dtype!r})")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers={self.scan_layers!r} must be True or False")
        if not 0 <= self.first_k_dense <= self.num_layers:
            raise ValueError(f"first_k_dense={self.first_k_dense} must lie in [0, num_layers={self.num_layers}]")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_k_dense

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(d_qk), times mscale^2 under YaRN exactly as the HF reference does."""
        scale = self.qk_head_dim**-0.5
        if self.yarn is not None and self.yarn.mscale_all_dim:
            m = yarn_mscale(self.yarn.factor, self.yarn.mscale_all_dim)
            scale = scale * m * m
        return scale

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def latent_cache_values_per_token(self) -> int:
        """Values cached per token per layer on the absorbed path: c_kv + k_rope (576 for V3)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def full_kv_cache_values_per_token(self) -> int:
        """Values per token per layer of a materialised K/V cache: H * (d_qk + d_v)."""
        return self.num_heads * (self.qk_head_dim + self.v_head_dim)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN attention temperature sqrt(1/t) = 0.1 * mscale * ln(s) + 1 [V3 §4.3]."""
    if scale <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


# ----------------------------------------------------------------------------- named sizes

def tiny(**kw) -> ModelConfig:
    """Runs in seconds on CPU: 1 dense + 2 MoE layers, 8 experts in 4 groups, YaRN on, MTP on.

    Layers unrolled (scan_layers=False): XLA:CPU compiles the unrolled train step of a few tiny
    layers about twice as fast as the scanned one (BENCHMARKS.md, "Compile time")."""
    base = ModelConfig(
        vocab_size=256, hidden_size=64, num_layers=3, num_heads=4, q_lora_rank=32, kv_lora_rank=32,
        qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, intermediate_size=128,
        moe_intermediate_size=32, first_k_dense=1, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, n_group=4, topk_group=2, routed_scaling_factor=2.5,
        yarn=YarnConfig(factor=4.0, original_max_position_embeddings=64), max_position_embeddings=256,
        init_std=0.02, scan_layers=False,
    )
    return base.replace(**kw)


def deepseek_v3_small(**kw) -> ModelConfig:
    """The CPU comparison model (experiments/bench_peers.py, bench_train.py): 4 layers (1 dense +
    3 MoE), hidden 256, MLA with 8 heads, 8 routed experts top-2, no MTP (HF's model has none)."""
    small = dict(vocab_size=1024, hidden_size=256, num_layers=4, num_heads=8, q_lora_rank=128,
                 kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                 intermediate_size=512, moe_intermediate_size=128, num_mtp_modules=0, yarn=None,
                 max_position_embeddings=512)
    return tiny(**{**small, **kw})


def deepseek_v3_671b(**kw) -> ModelConfig:
    """The published DeepSeek-V3 / R1 shapes (config_671B.json)."""
    return ModelConfig().replace(**kw)


def deepseek_v2_lite(**kw) -> ModelConfig:
    """DeepSeek-V2-Lite (15.7B total, 2.4B active): no q compression, softmax routing."""
    base = ModelConfig(
        vocab_size=102400, hidden_size=2048, num_layers=27, num_heads=16, q_lora_rank=None,
        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        intermediate_size=10944, moe_intermediate_size=1408, first_k_dense=1, n_routed_experts=64,
        n_shared_experts=2, num_experts_per_tok=6, n_group=1, topk_group=1, scoring_func="softmax",
        topk_method="greedy", norm_topk_prob=False, routed_scaling_factor=1.0, num_mtp_modules=0,
        yarn=YarnConfig(factor=40.0, original_max_position_embeddings=4096, beta_fast=32.0,
                        beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707),
    )
    return base.replace(**kw)


def moe_1b(**kw) -> ModelConfig:
    """A ~1B-parameter MoE-MLA model for single-GPU work (kernels, FP8, throughput)."""
    base = ModelConfig(
        vocab_size=32768, hidden_size=1024, num_layers=16, num_heads=16, q_lora_rank=384,
        kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
        intermediate_size=2816, moe_intermediate_size=512, first_k_dense=1, n_routed_experts=32,
        n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2, num_mtp_modules=1,
        yarn=None, max_position_embeddings=4096,
    )
    return base.replace(**kw)


SIZES = {"tiny": tiny, "deepseek_v3_small": deepseek_v3_small, "deepseek_v3_671b": deepseek_v3_671b, "deepseek_v2_lite": deepseek_v2_lite,
         "moe_1b": moe_1b}


def get_model_config(name: str, **kw) -> ModelConfig:
    if name not in SIZES:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name](**kw)
