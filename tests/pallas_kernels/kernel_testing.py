"""Helpers shared by the kernel tests: error metric, CUDA lowering on a CPU host, and a clean
Mosaic GPU interpreter state for the model-level kernel tests."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call

BF16_TOL = 1e-2  # relative Frobenius error for bf16 inputs/outputs
F32_TOL = 1e-5  # same, fp32 paths


def rel_err(x, ref) -> float:
  """Relative Frobenius error of x against ref, in float64."""
  x = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
  ref = np.asarray(jnp.asarray(ref, jnp.float32), np.float64)
  assert np.all(np.isfinite(x)), "non-finite values in kernel output"
  return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def lower_for_cuda(fn, *args):
  """StableHLO text of `fn` lowered for CUDA on this (CPU) host; no GPU compile happens."""
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
  return text


def mosaic_calls(text: str) -> int:
  return text.count("stablehlo.custom_call @mosaic_gpu")


@contextlib.contextmanager
def fresh_interpreter_state():
  """Resets the Mosaic GPU interpreter's global state on exit: a kernel that raised leaves it dirty.

  The model runs its kernels in the interpreter with `ModelConfig.kernels="pallas_interpret"`
  (r1jax/nn/kernels.py: uninitialized SMEM/GMEM reads come out NaN).
  """
  try:
    yield
  finally:
    interpret_pallas_call.reset_gpu_interpret_mode_state()


def record_kernel_runs(monkeypatch, module, name: str, what=lambda args, kwargs: args[0].shape):
  """Wrap `module.name` (a kernel entry point) to record `what(args, kwargs)` of every call that
  reaches it; returns the list, filled as the test runs."""
  runs = []
  kernel = getattr(module, name)
  monkeypatch.setattr(module, name, lambda *a, **kw: runs.append(what(a, kw)) or kernel(*a, **kw))
  return runs
