"""RMSNorm, computed in float32 as the reference does."""

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.nn.params import ones_param


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, axis_name: str, param_dtype):
        self.eps = eps
        self.scale = ones_param((dim,), (axis_name,), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        # The reference casts back to the input dtype before multiplying by the weight.
        return self.scale[...].astype(dtype) * x32.astype(dtype)
