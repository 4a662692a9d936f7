"""MLA's shared down-projection GEMM equals the two projections it replaces; attention block sizes.

`MLA.down_projections` runs q_a and kv_a (both read the layer input) as one GEMM against their
concatenated weights. Tolerance: float32 with highest matmul precision, 1e-5 * (1 + |want|)
elementwise for the outputs and for the gradients of x, q_a and kv_a (the same sums; only
the GEMM's blocking differs). The params dict keeps q_a and kv_a as separate entries.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from r1jax import config
from r1jax.nn.attention import DEFAULT_BLOCK, SMALL_HEAD_BLOCK, block_for
from r1jax.nn.linear import project
from r1jax.nn.mla import MLA
from r1jax.nn.params import merge_params
from tests import numerics

TOL = 1e-5


def test_shared_down_projection_equals_two_projections_values_and_gradients():
    cfg = config.tiny()
    params = nnx.to_pure_dict(nnx.state(MLA(cfg, rngs=nnx.Rngs(0))))
    assert {"q_a", "kv_a"} <= set(params)  # the user-facing names are unchanged
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, cfg.hidden_size)), jnp.float32)

    def score(q_down, kv_down):  # a nonlinear read of both outputs, so gradients mix them
        return jnp.sum(jnp.tanh(q_down) ** 2) + jnp.sum(jnp.sin(kv_down))

    def fused(params, x):
        q_down, kv_down = merge_params(MLA(cfg, rngs=nnx.Rngs(0)), params).down_projections(x)
        return score(q_down, kv_down), (q_down, kv_down)

    def separate(params, x):
        q_down = project(x, params["q_a"], cfg.precision)  # (B, T, Q)
        kv_down = project(x, params["kv_a"], cfg.precision)  # (B, T, C+R)
        return score(q_down, kv_down), (q_down, kv_down)

    with jax.default_matmul_precision("highest"):
        (got_s, got_out), got_g = jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(params, x)
        (want_s, want_out), want_g = jax.value_and_grad(separate, argnums=(0, 1), has_aux=True)(
            params, x)
    assert got_out[0].shape == (2, 5, cfg.q_lora_rank)
    assert got_out[1].shape == (2, 5, cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    numerics.assert_close(got_s, want_s, "score", TOL)
    numerics.assert_close(got_out[0], want_out[0], "q_a(x)", TOL)
    numerics.assert_close(got_out[1], want_out[1], "kv_a(x)", TOL)
    numerics.assert_close(got_g[1], want_g[1], "dx", TOL)
    for name in ("q_a", "kv_a"):
        numerics.assert_close(got_g[0][name], want_g[0][name], f"d{name}", TOL)


def test_block_for_takes_smaller_blocks_for_small_heads():
    assert block_for(48) == SMALL_HEAD_BLOCK < DEFAULT_BLOCK == block_for(128) == block_for(192)
