"""Pieces shared by the Mosaic GPU kernels: SMEM layouts and backend choice."""

import jax
import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu


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


def resolve_implementation(implementation: str | None, interpret) -> str:
  """`None` picks the Mosaic GPU kernel on Hopper (or under the interpreter), else XLA."""
  if implementation is None:
    return "mosaic_gpu" if (interpret is not None or on_hopper()) else "xla"
  if implementation not in ("xla", "mosaic_gpu"):
    raise ValueError(f"{implementation=} must be None, 'xla' or 'mosaic_gpu'")
  return implementation


def cdiv(a: int, b: int) -> int:
  return -(-a // b)


def round_up(a: int, b: int) -> int:
  return cdiv(a, b) * b
