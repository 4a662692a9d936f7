"""SwiGLU feed-forward: down(silu(x gate) * (x up)). Used for dense layers and shared experts."""

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.nn.params import normal_param


class SwiGLU(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, std: float, param_dtype, rngs: nnx.Rngs):
        self.gate = normal_param(rngs, (dim, hidden), ("embed", "mlp"), std, param_dtype)
        self.up = normal_param(rngs, (dim, hidden), ("embed", "mlp"), std, param_dtype)
        self.down = normal_param(rngs, (hidden, dim), ("mlp", "embed"), std, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = x.dtype
        g = jnp.einsum("...d,df->...f", x, self.gate[...].astype(dt))  # (..., F)
        u = jnp.einsum("...d,df->...f", x, self.up[...].astype(dt))  # (..., F)
        return jnp.einsum("...f,fd->...d", jax.nn.silu(g) * u, self.down[...].astype(dt))
