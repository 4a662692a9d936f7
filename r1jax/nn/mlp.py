"""SwiGLU feed-forward: down(silu(x gate) * (x up)). Used for dense layers and shared experts."""

import jax
from flax import nnx

from r1jax.nn.linear import project
from r1jax.nn.params import normal_param


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
        g = project(x, self.gate.get_value(), r, k)  # (..., F)
        u = project(x, self.up.get_value(), r, k)  # (..., F)
        return project(jax.nn.silu(g) * u, self.down.get_value(), r, k)  # (..., D)
