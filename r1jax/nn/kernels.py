"""Which implementation runs each op of the model, decided here alone from `ModelConfig.kernels`.

Axis glossary: B batch (or the weight's batch/expert dim of an FP8 GEMM), T query tokens,
S key tokens, H heads, M grouped-matmul rows, G groups (experts), K/N contraction/output dims,
P/Q rows of the FP8 GEMM's operands, C number of 128-chunks.

`kernel_choice(cfg.kernels)` gives a `KernelChoice`, a frozen (hashable) record that mla.py,
moe_dispatch.py and fp8_gemm.py receive and hand back here: mla.py asks `use_causal_attention` /
`use_latent_attention` before its run-time mask check, moe_dispatch calls `ragged_dot`, and
fp8_matmul resolves `block_scaled_gemm_choice` before its jit. The values (config.KERNEL_CHOICES):
  "xla"               plain jnp/lax everywhere.
  "pallas"            the Mosaic GPU kernels of pallas_kernels/, compiled for Hopper (sm_90), for
                      every call the kernel supports; elsewhere (CPU, another GPU, shapes or dtypes
                      a kernel does not support) the model's own XLA math, the same as "xla", so
                      one config runs everywhere.
  "pallas_interpret"  the same kernels in the Mosaic GPU interpreter on any backend (the CPU tests),
                      with NaN-filled uninitialized memory so that reads of unwritten data show up.
  "xla_reference"     the plain formulations on every backend: attention as a dense (B, H, T, S)
                      masked softmax, expert GEMMs as `jax.lax.ragged_dot`. The baseline that
                      tests and benchmarks compare the others with.
The config is a static argument of every jit that traces the model, so the choice, interpreter
included, is part of the jit cache key.

What a kernel supports is the kernel's own rule: `pallas_kernels/<op>/mosaic_gpu.check_support`
raises NotImplementedError naming the rule (platform, bf16, head dims, rope width, block sizes).
The four kernels:
  grouped_matmul  the three expert GEMMs of the routed SwiGLU (moe_dispatch.grouped_swiglu)
  mla_attention   causal attention of the naive MLA path (training, prefill without cache)
  mla_decode      absorbed MLA attention over the latent cache (decoding)
  fp8_block_gemm  Fprop/Dgrad/Wgrad of the fp8_v3 projections (r1jax/nn/fp8_gemm.py)
Whether this batch's attention mask is a kernel's mask is a run-time question that mla.py answers.

Where no kernel runs, the XLA formulations are chosen here too (all but "xla_reference"):
  causal attention  r1jax/nn/attention.py's query blocks with a recomputing backward, on every
                    backend (no (B, H, T, S) mask or scores; blocks above the diagonal skipped):
                    mla.py asks `use_blockwise_attention`.
  expert GEMMs      on backends where `ragged_dot` lowers to a masked dense product over all
                    groups (CPU: M*G*K*N work for M*K*N), r1jax/nn/ragged_tiles.py's batched
                    GEMM over group-aligned tiles; elsewhere `jax.lax.ragged_dot`.

`pallas_kernels` is imported only when a kernel is asked about or traced, so importing the model
never needs the Mosaic GPU pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from r1jax.config import KERNEL_CHOICES
from r1jax.nn.ragged_tiles import tiled_ragged_dot


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """pallas: run the Mosaic GPU kernels where they support the call. interpret: in the Mosaic GPU
    interpreter (any backend) rather than compiled for sm_90. reference: the dense masked softmax
    and `jax.lax.ragged_dot` everywhere."""

    pallas: bool = False
    interpret: bool = False
    reference: bool = False  # plain XLA formulations ("xla_reference"): no kernel, no tiling

    @property
    def interpret_params(self):
        """The kernels' `interpret=` argument: InterpretGPUParams, or None to compile."""
        if not self.interpret:
            return None
        from jax.experimental.pallas import mosaic_gpu as plgpu

        return plgpu.InterpretGPUParams(uninitialized_memory="nan")


XLA = KernelChoice()


def kernel_choice(kernels: str) -> KernelChoice:
    """The KernelChoice of a `ModelConfig.kernels` value."""
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"kernels={kernels!r} must be one of {KERNEL_CHOICES}")
    return KernelChoice(pallas=kernels.startswith("pallas"), interpret=kernels == "pallas_interpret",
                        reference=kernels == "xla_reference")


def _supports(check_support: Callable[[], None]) -> bool:
    """Whether a kernel's own check passes; it raises NotImplementedError naming the rule it breaks."""
    try:
        check_support()
    except (ImportError, NotImplementedError):  # ImportError: a jax without Pallas Mosaic GPU
        return False
    return True


# ----------------------------------------------------------------------------- grouped matmul

def _grouped_matmul_blocks(choice: KernelChoice):
    from pallas_kernels.grouped_matmul import BlockSizes

    # The interpreter's cost grows with the padded tile area: 64-wide tiles keep small test
    # models cheap. Compiled, the kernel's defaults (128x128x64) are the tuned ones.
    return BlockSizes(64, 64, 64, max_concurrent_steps=2) if choice.interpret else None


def use_grouped_matmul(lhs, rhs, *, choice: KernelChoice) -> bool:
    """Whether `ragged_dot` runs lhs (M, K) x rhs (G, K, N) on the grouped-matmul kernel."""
    def check():
        from pallas_kernels.grouped_matmul import check_support
        check_support(lhs, rhs, interpret=choice.interpret_params)

    return choice.pallas and _supports(check)


def ragged_dot(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *,
               choice: KernelChoice, max_group_size: int | None = None) -> jax.Array:
    """`jax.lax.ragged_dot`: lhs (M, K) rows sorted by group, rhs (G, K, N) -> (M, N), on the
    grouped-matmul kernel (differentiable, custom_vjp) where `use_grouped_matmul`, else
    `xla_ragged_dot`. `max_group_size`: a bound on every group's size, if the caller knows one."""
    if use_grouped_matmul(lhs, rhs, choice=choice):
        return grouped_matmul(lhs, rhs, group_sizes, choice=choice)
    return xla_ragged_dot(lhs, rhs, group_sizes, choice=choice, max_group_size=max_group_size)


def ragged_dot_is_dense() -> bool:
    """Whether this backend lowers `jax.lax.ragged_dot` to a dense product over every group with
    the other groups' rows masked: XLA:CPU does (forward and both transposes)."""
    return jax.default_backend() == "cpu"


def xla_ragged_dot(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *,
                   choice: KernelChoice, preferred_element_type=None,
                   max_group_size: int | None = None) -> jax.Array:
    """`jax.lax.ragged_dot` without a kernel: lhs (M, K), rhs (G, K, N) -> (M, N). Where
    `ragged_dot_is_dense`, the batched GEMM over group-aligned tiles of r1jax/nn/ragged_tiles.py,
    whose cost follows the rows (one tile per group, the weights read in place, for few rows
    under a known `max_group_size`); elsewhere, or with `choice.reference`, `jax.lax.ragged_dot`.
    Also the FP8 grouped GEMMs' dot (r1jax/nn/fp8_ragged.py)."""
    if not choice.reference and ragged_dot_is_dense():
        return tiled_ragged_dot(lhs, rhs, group_sizes, preferred_element_type=preferred_element_type,
                                max_group_size=max_group_size)
    return jax.lax.ragged_dot(lhs, rhs, group_sizes, preferred_element_type=preferred_element_type)


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *,
                   choice: KernelChoice) -> jax.Array:
    """The kernel: lhs (M, K), rhs (G, K, N) -> (M, N); raises NotImplementedError where it does
    not support the call."""
    from pallas_kernels.grouped_matmul import grouped_matmul as gmm

    return gmm(lhs, rhs, group_sizes.astype("int32"), implementation="mosaic_gpu",
               block_sizes=_grouped_matmul_blocks(choice), interpret=choice.interpret_params)


# ----------------------------------------------------------------------------- MLA attention

def use_causal_attention(q, k, v, *, choice: KernelChoice) -> bool:
    """Whether `causal_attention` runs for q, k (B, T, H, Dqk), v (B, T, H, Dv) (arrays or
    jax.ShapeDtypeStruct): the choice asks for kernels and mla_attention supports the shapes."""
    def check():
        from pallas_kernels.mla_attention import BlockSizes, check_support
        check_support(q, k, v, block_sizes=BlockSizes(), interpret=choice.interpret_params)

    return choice.pallas and _supports(check)


def use_blockwise_attention(choice: KernelChoice) -> bool:
    """Whether causal attention without a cache, where no kernel runs it, takes the query blocks of
    r1jax/nn/attention.py (every backend) rather than the dense (B, H, T, S) masked softmax: all
    choices but "xla_reference"."""
    return not choice.reference


def causal_attention(q, k, v, lengths, *, softmax_scale: float, choice: KernelChoice) -> jax.Array:
    """q, k (B, T, H, Dqk), v (B, T, H, Dv), lengths (B,) -> (B, T, H, Dv) on the kernel.

    Query t of row b sees keys s <= t with s < lengths[b].
    """
    from pallas_kernels.mla_attention import mla_attention

    return mla_attention(q, k, v, lengths, softmax_scale=softmax_scale, causal=True,
                         implementation="mosaic_gpu", interpret=choice.interpret_params)


def _decode_blocks(latent: int, choice: KernelChoice):
    from pallas_kernels.mla_decode import BlockSizes, default_block_sizes

    if choice.interpret:
        # The interpreter runs P staged through SMEM; 64 value columns and two splits keep the
        # tests' interpreted grid small.
        return BlockSizes(block_dv=64, num_splits=2, p_in_registers=False)
    return default_block_sizes(latent)  # the tuned blocks for this latent width


def use_latent_attention(q, c_kv, k_rope, *, choice: KernelChoice) -> bool:
    """Whether `latent_attention` runs for q (B, T, H, C+R), c_kv (B, S, C), k_rope (B, S, R)
    (arrays or jax.ShapeDtypeStruct): the choice asks for kernels and mla_decode supports them."""
    latent = c_kv.shape[-1]

    def check():
        from pallas_kernels.mla_decode import check_support
        check_support(q, c_kv, k_rope, latent_dim=latent, block_sizes=_decode_blocks(latent, choice),
                      interpret=choice.interpret_params)

    return choice.pallas and _supports(check)


def latent_attention(q, c_kv, k_rope, lengths, starts=None, *, softmax_scale: float,
                     choice: KernelChoice) -> jax.Array:
    """q (B, T, H, C+R) over the cache c_kv (B, S, C), k_rope (B, S, R) -> (B, T, H, C) on the kernel.

    Query t of row b sees keys starts[b] <= s < lengths[b] - T + 1 + t: the row's valid slots
    are [starts[b], lengths[b]) (left padding before them; starts None means 0) and the T new
    tokens are the last of them. The kernel never reads the blocks before starts[b].
    """
    from pallas_kernels.mla_decode import mla_decode

    latent = c_kv.shape[-1]
    return mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=softmax_scale, latent_dim=latent,
                      implementation="mosaic_gpu", block_sizes=_decode_blocks(latent, choice),
                      interpret=choice.interpret_params)


# ----------------------------------------------------------------------------- FP8 block-scaled GEMM

def block_scaled_gemm_choice(choice: KernelChoice) -> KernelChoice:
    """`choice` where fp8_block_gemm runs on this platform (any shape: it pads), else XLA (the
    emulation of r1jax/nn/fp8_gemm.py).

    fp8_matmul asks before its jit: the platform decides too, and a jit cache key holds the
    choice it is given, not the platform.
    """
    def check():
        from pallas_kernels.fp8_block_gemm import check_support
        check_support(interpret=choice.interpret_params)

    return choice if choice.pallas and _supports(check) else XLA


def block_scaled_gemm(a_values, a_scales, b_values, b_scales, *, b_scale_rows: bool,
                      choice: KernelChoice) -> jax.Array:
    """a (B, P, C*128) E4M3 with scales (B, P, C), b (B, Q, C*128) with scales (B, Q/128, C) per
    128x128 block or, with `b_scale_rows`, (B, Q, C) per row -> (B, P, Q) FP32, on fp8_block_gemm
    vmapped over B (one launch: plgpu.kernel's batching rule adds B to the kernel's grid)."""
    from pallas_kernels.fp8_block_gemm import BlockSizes, fp8_block_gemm

    # The interpreter's cost grows with the padded tile area: the smallest legal tiles (wgmma's
    # 64 rows, 64 columns that divide a 128 weight block) keep tests cheap. Compiled, the kernel's
    # defaults (64x128, 4 stages) are the tuned ones.
    blocks = BlockSizes(block_m=64, block_n=64, max_concurrent_steps=2) if choice.interpret else None

    def gemm(a, a_s, b, b_s):  # (P, K), (P, C), (Q, K), (Q/128 or Q, C) -> (P, Q)
        return fp8_block_gemm(a, a_s, b, b_s, out_dtype=jnp.float32, b_scale_rows=b_scale_rows,
                              implementation="mosaic_gpu", block_sizes=blocks,
                              interpret=choice.interpret_params)

    return jax.vmap(gemm)(a_values, a_scales, b_values, b_scales)  # (B, P, Q)
