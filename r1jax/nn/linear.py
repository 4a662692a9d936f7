"""Projections under the model's precision recipe.

"bf16" is a plain matmul in the activation dtype (float32 activations give float32 matmuls);
"fp8_v3" / "fp8_per_tensor" run the projection through `fp8_matmul` (r1jax/nn/fp8.py). Only the
projections V3 runs in FP8 call this: MLA's q/kv/o projections, dense and expert FFNs [V3 §3.3].
Embedding, output head, MoE gate, norms and the attention core stay in BF16/FP32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.nn.fp8 import fp8_matmul


def project(x: jax.Array, w: jax.Array, recipe: str) -> jax.Array:
    """x (..., K) @ w (K, ...) -> (..., *w.shape[1:]); multi-dim outputs (heads) are flattened for
    the matmul and restored after."""
    out_shape = w.shape[1:]
    w2 = w.reshape(w.shape[0], -1)
    if recipe == "bf16":
        y = jnp.einsum("...k,kn->...n", x, w2.astype(x.dtype))
    else:
        y = fp8_matmul(x, w2, recipe)
    return y.reshape(*x.shape[:-1], *out_shape)


def project_in(x: jax.Array, w: jax.Array, recipe: str, n_in: int) -> jax.Array:
    """Contract the last `n_in` dims of x with the first `n_in` dims of w (e.g. (B, T, H, V) with
    the output projection (H, V, D))."""
    k = 1
    for d in w.shape[:n_in]:
        k *= d
    return project(x.reshape(*x.shape[:-n_in], k), w.reshape(k, *w.shape[n_in:]), recipe)
