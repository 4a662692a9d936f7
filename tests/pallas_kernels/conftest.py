"""Fixtures for the kernel tests: the Mosaic GPU interpreter, with and without race detection, and
the platform the kernels' support checks see."""

import pytest
from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call
from jax.experimental.pallas import mosaic_gpu as plgpu

import pallas_kernels._common


@pytest.fixture
def interpret():
  """Interpreter params; uninitialized SMEM/GMEM is NaN so reads of unwritten data show up."""
  return plgpu.InterpretGPUParams(uninitialized_memory="nan")


@pytest.fixture
def race_checked_interpret():
  """Interpreter with the happens-before race detector; the test asserts no race was seen."""
  interpret_pallas_call.reset_gpu_interpret_mode_state()
  yield plgpu.InterpretGPUParams(detect_races=True)
  assert not interpret_pallas_call.get_races().races_found, "data race in kernel"


@pytest.fixture(autouse=True)
def _reset_interpreter():
  yield
  # A kernel that raised leaves the interpreter's global state dirty.
  interpret_pallas_call.reset_gpu_interpret_mode_state()


@pytest.fixture
def hopper(monkeypatch):
  """CUDA lowering on this host: the kernels' platform check sees an sm_90 default device."""
  monkeypatch.setattr(pallas_kernels._common, "on_hopper", lambda: True)


@pytest.fixture
def not_hopper(monkeypatch):
  """A default device that is not sm_90 (whatever this host has): compiled kernels cannot run."""
  monkeypatch.setattr(pallas_kernels._common, "on_hopper", lambda: False)
