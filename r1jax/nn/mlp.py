"""SwiGLU feed-forward: down(silu(x gate) * (x up)). Used for dense layers and shared experts.

Axis glossary: D model dim, F hidden (intermediate) dim."""

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.nn.fp8_quant import QuantizedArray
from r1jax.nn.linear import project
from r1jax.nn.params import normal_param
from r1jax.nn.partitioning import may_split


class SwiGLU(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, std: float, param_dtype, rngs: nnx.Rngs,
                 precision: str = "bf16", kernels: str = "xla"):
        self.precision = precision
        self.kernels = kernels  # ModelConfig.kernels, for the fp8_v3 GEMMs (r1jax/nn/linear.py)
        self.gate = normal_param(rngs, (dim, hidden), ("embed", "mlp"), std, param_dtype)
        self.up = normal_param(rngs, (dim, hidden), ("embed", "mlp"), std, param_dtype)
        self.down = normal_param(rngs, (hidden, dim), ("mlp", "embed"), std, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        r, k = self.precision, self.kernels
        w_gate, w_up = self.gate.get_value(), self.up.get_value()  # (D, F) each
        if (r == "bf16" and not any(isinstance(w, QuantizedArray) for w in (w_gate, w_up))
                and not may_split("mlp")):
            # Both read x: one GEMM against [gate | up] (D, 2F), one dX GEMM in the backward.
            g, u = jnp.split(project(x, jnp.concatenate([w_gate, w_up], axis=1), r, k), 2, axis=-1)
        else:  # FP8 (each weight has its own scales), or F split over devices
            g, u = project(x, w_gate, r, k), project(x, w_up, r, k)  # (..., F) each
        return project(jax.nn.silu(g) * u, self.down.get_value(), r, k)  # (..., D)
