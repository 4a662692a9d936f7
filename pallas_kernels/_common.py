"""Pieces shared by the Mosaic GPU kernels: SMEM layouts, support checks and implementation choice.

Every `<op>/mosaic_gpu.py` has a `check_support(...)` that raises `NotImplementedError` naming the
rule a call breaks (platform, dtype, shapes, block sizes). Each `<op>/api.py` takes
`implementation=None | "xla" | "mosaic_gpu"` and hands it to `run_implementation`: None runs the
kernel where its check passes and the XLA reference elsewhere; "mosaic_gpu" lets the check's
error propagate; "xla" is the reference.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu

IMPLEMENTATIONS = ("xla", "mosaic_gpu")


def swizzled(dtype, minor_dim: int) -> tuple:
  """SMEM transforms that make a tile with `minor_dim` columns a wgmma operand.

  wgmma reads operands from SMEM in 8-row core matrices; the largest swizzle
  the row width allows avoids bank conflicts on both the TMA write and the
  tensor-core read.
  """
  bits = jnp.finfo(dtype).bits if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).bits
  swizzle = plgpu.find_swizzle(minor_dim * bits)
  return (plgpu.TilingTransform((8, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle))


def on_hopper() -> bool:
  """True when the default device is an sm_90 GPU (the only target of our kernels)."""
  device = jax.devices()[0]
  return device.platform == "gpu" and getattr(device, "compute_capability", "") == "9.0"


# ---------------------------------------------------------------- support rules shared by the kernels


def check_platform(op: str, interpret) -> None:
  """The kernels compile for sm_90 only (wgmma, TMA); the interpreter runs them on any backend."""
  if interpret is None and not on_hopper():
    device = jax.devices()[0]
    raise NotImplementedError(
        f"{op}: the Mosaic GPU kernel compiles for sm_90 (Hopper) only, but the default device is "
        f"{device.platform} {getattr(device, 'device_kind', '')!r}; pass "
        f"interpret=plgpu.InterpretGPUParams() to run it in the Mosaic GPU interpreter, or "
        f"implementation='xla'")


def check_bf16(op: str, **operands) -> None:
  """The kernels' wgmmas take bf16 operands (an f32 grouped GEMM fails to lower: "Only f16 WGMMA
  supports transposes"); other dtypes keep the XLA reference."""
  for name, x in operands.items():
    if jnp.dtype(x.dtype) != jnp.bfloat16:
      raise NotImplementedError(f"{op}: {name}.dtype={jnp.dtype(x.dtype).name} must be bfloat16 for "
                                f"the Mosaic GPU kernel; cast it, or use implementation='xla'")


def check_interpretable(op: str, p_in_registers: bool, interpret) -> None:
  """The interpreter has no rule for a wgmma whose A operand is in registers ("'wgmma' not found
  for platform cpu"): that path is checked by CUDA lowering and on a GPU only."""
  if p_in_registers and interpret is not None:
    raise NotImplementedError(f"{op}: BlockSizes(p_in_registers=True) feeds wgmma from registers, "
                              f"which the Mosaic GPU interpreter cannot run; use "
                              f"p_in_registers=False to interpret")


def run_implementation(implementation: str | None, *, check_support: Callable[[], None],
                       mosaic_gpu: Callable[[], jax.Array], xla: Callable[[], jax.Array]):
  """Runs one implementation of an op.

  None: the Mosaic GPU kernel if `check_support()` passes, else the XLA reference (the check is
  made before the kernel is traced, so only its NotImplementedError means "not supported").
  "mosaic_gpu": the kernel; a call it does not support raises the check's NotImplementedError.
  "xla": the reference.
  """
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(f"{implementation=} must be None or one of {IMPLEMENTATIONS}")
  if implementation == "xla":
    return xla()
  try:
    check_support()
  except NotImplementedError:
    if implementation == "mosaic_gpu":
      raise
    return xla()
  return mosaic_gpu()


def cdiv(a: int, b: int) -> int:
  return -(-a // b)


def round_up(a: int, b: int) -> int:
  return cdiv(a, b) * b
