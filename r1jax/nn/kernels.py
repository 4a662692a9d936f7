"""The model's door to the Pallas kernels (`ModelConfig.kernels = "pallas"`).

Axis glossary: B batch, T query tokens, S key tokens, H heads, M grouped-matmul rows,
G groups (experts), K/N grouped-matmul contraction/output dims.

Three kernels from `pallas_kernels/` are wired into the model:
  grouped_matmul  the three expert GEMMs of the routed SwiGLU (moe_dispatch.grouped_swiglu)
  mla_attention   causal attention of the naive MLA path (training, prefill without cache)
  mla_decode      absorbed MLA attention over the latent cache (decoding)
and a fourth through the FP8 recipe: under precision="fp8_v3" the Fprop/Dgrad/Wgrad GEMMs of the
dense projections (MLA, dense and shared-expert FFNs) run on fp8_block_gemm (r1jax/nn/fp8_gemm.py).

Where they run: on a Hopper (sm_90) GPU the Mosaic GPU kernels compile for real. Inside
`with kernel_interpret():` they run in the Mosaic GPU interpreter (any backend, e.g. CPU tests).
Elsewhere (`available()` is False) the model keeps its own XLA path (the MLA einsums,
`jax.lax.ragged_dot`), so a `kernels="pallas"` config runs everywhere with the same numerics. The interpreter setting is read when a function is
traced: a `jax.jit` cache entry traced outside the context keeps the compiled kernels (or XLA).

`pallas_kernels` is imported only when a kernel is traced, so importing the model never needs
the Mosaic GPU pieces.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

# InterpretGPUParams while inside `kernel_interpret()`, else None (compile on Hopper / XLA).
_INTERPRET = contextvars.ContextVar("r1jax_kernel_interpret", default=None)


@contextlib.contextmanager
def kernel_interpret(params=None):
    """Run the Pallas kernels traced inside this context in the Mosaic GPU interpreter.

    params: a `plgpu.InterpretGPUParams` (default: the interpreter's defaults).
    """
    if params is None:
        from jax.experimental.pallas import mosaic_gpu as plgpu
        params = plgpu.InterpretGPUParams()
    token = _INTERPRET.set(params)
    try:
        yield params
    finally:
        _INTERPRET.reset(token)


def interpret_params():
    """The interpreter params in effect, or None."""
    return _INTERPRET.get()


def available() -> bool:
    """True when a traced kernel would run as a kernel: under the interpreter, or on Hopper."""
    if interpret_params() is not None:
        return True
    try:
        from pallas_kernels._common import on_hopper
    except ImportError:  # a jax without Pallas Mosaic GPU: the XLA path is the only one
        return False
    return on_hopper()


# ----------------------------------------------------------------------------- shape support
# Measured by lowering for CUDA (jax 0.11.2): the attention backward needs head dims that are
# multiples of 64 (d_qk = 96 lowers forward but not dQ/dK); SMEM swizzles need rows of at least
# 32 bytes, i.e. a rope width that is a multiple of 16 bf16 values (8 fails). Shapes outside
# these keep the XLA path rather than failing to compile.

def attention_kernel_fits(qk_head_dim: int, v_head_dim: int) -> bool:
    return qk_head_dim % 64 == 0 and v_head_dim % 64 == 0


def decode_kernel_fits(kv_lora_rank: int, qk_rope_head_dim: int) -> bool:
    return kv_lora_rank % 64 == 0 and qk_rope_head_dim % 16 == 0


# ----------------------------------------------------------------------------- ops

def grouped_matmul(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array) -> jax.Array:
    """lhs (M, K) rows sorted by group, rhs (G, K, N) -> (M, N); differentiable (custom_vjp).

    Where no kernel can run this is `jax.lax.ragged_dot`, the same contract.
    """
    if not available():
        return jax.lax.ragged_dot(lhs, rhs, group_sizes)
    from pallas_kernels.grouped_matmul import BlockSizes, grouped_matmul as gmm

    interpret = interpret_params()
    # The interpreter's cost grows with the padded tile area: 64-wide tiles keep small test
    # models cheap. Compiled, the kernel's defaults (128x128x64) are the tuned ones.
    blocks = BlockSizes(64, 64, 64, max_concurrent_steps=2) if interpret is not None else None
    return gmm(lhs, rhs, group_sizes.astype("int32"), block_sizes=blocks, interpret=interpret)


def causal_attention(q, k, v, lengths, *, softmax_scale: float) -> jax.Array:
    """q, k (B, T, H, Dqk), v (B, T, H, Dv), lengths (B,) -> (B, T, H, Dv).

    Query t of row b sees keys s <= t with s < lengths[b].
    """
    from pallas_kernels.mla_attention import mla_attention

    return mla_attention(q, k, v, lengths, softmax_scale=softmax_scale, causal=True,
                         interpret=interpret_params())


def latent_attention(q, c_kv, k_rope, lengths, starts=None, *, softmax_scale: float) -> jax.Array:
    """q (B, T, H, C+R) over the cache c_kv (B, S, C), k_rope (B, S, R) -> (B, T, H, C).

    Query t of row b sees keys starts[b] <= s < lengths[b] - T + 1 + t: the row's valid slots
    are [starts[b], lengths[b]) (left padding before them; starts None means 0) and the T new
    tokens are the last of them. The kernel never reads the blocks before starts[b].
    """
    from pallas_kernels.mla_decode import BlockSizes, mla_decode

    latent = c_kv.shape[-1]
    interpret = interpret_params()
    if interpret is not None:
        # The interpreter has no rule for wgmma with a register operand: stage P through SMEM,
        # which fits with at most 128 value columns per CTA.
        blocks = BlockSizes(block_dv=64, num_splits=2, p_in_registers=False)
    elif latent % 256 == 0:
        blocks = None  # the tuned default (V3: C = 512)
    else:
        # 256 value columns per CTA need P in registers (V3's tuned default) and a latent that
        # 256 divides; otherwise stage P through SMEM with at most 128 columns.
        blocks = BlockSizes(block_dv=128 if latent % 128 == 0 else 64, p_in_registers=False)
    return mla_decode(q, c_kv, k_rope, lengths, starts, softmax_scale=softmax_scale, latent_dim=latent,
                      block_sizes=blocks, interpret=interpret)
