"""GEMMs that share their input run as one, and equal the separate GEMMs they replace.

`MLA.down_projections` runs q_a and kv_a (both read the layer input) as one GEMM against their
concatenated weights; `SwiGLU` and `grouped_swiglu` (routed experts) do so for gate and up.
Tolerance: float32 with highest matmul precision, 1e-5 * (1 + |want|) elementwise for the
outputs and for the gradients of the input and of each weight (the same sums; only the GEMM's
blocking differs). The params dict keeps every weight as its own entry. Also: attention block
sizes by head dim.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from r1jax import config
from r1jax.nn.attention import DEFAULT_BLOCK, SMALL_HEAD_BLOCK, block_for
from r1jax.nn import kernels
from r1jax.nn.linear import project
from r1jax.nn.mla import MLA
from r1jax.nn.mlp import SwiGLU
from r1jax.nn.moe_dispatch import grouped_swiglu
from r1jax.nn.partitioning import may_split
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


def assert_same_values_and_gradients(got_fn, want_fn, args, names):
    with jax.default_matmul_precision("highest"):
        got_v, got_g = jax.value_and_grad(got_fn, argnums=tuple(range(len(args))))(*args)
        want_v, want_g = jax.value_and_grad(want_fn, argnums=tuple(range(len(args))))(*args)
    numerics.assert_close(got_v, want_v, "value", TOL)
    for name, g, w in zip(names, got_g, want_g, strict=True):
        numerics.assert_close(g, w, f"d{name}", TOL)


def test_swiglu_with_one_gate_up_gemm_equals_separate_projections():
    d, f = 16, 24

    def new_swiglu():
        return SwiGLU(d, f, std=0.3, param_dtype=jnp.float32, rngs=nnx.Rngs(1))

    params = nnx.to_pure_dict(nnx.state(new_swiglu()))
    assert set(params) == {"gate", "up", "down"}
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 7, d)), jnp.float32)

    def fused(x, gate, up, down):
        mlp = merge_params(new_swiglu(), {"gate": gate, "up": up, "down": down})
        return jnp.sum(jnp.sin(mlp(x)))

    def separate(x, gate, up, down):
        return jnp.sum(jnp.sin((jax.nn.silu(x @ gate) * (x @ up)) @ down))

    weights = (params["gate"], params["up"], params["down"])
    assert_same_values_and_gradients(fused, separate, (x, *weights), ("x", "gate", "up", "down"))


def test_grouped_swiglu_with_one_gate_up_gemm_equals_separate_grouped_gemms():
    rng = np.random.default_rng(2)
    m, g, d, f = 40, 3, 16, 24
    rows = jnp.asarray(rng.normal(size=(m, d)), jnp.float32)
    gate, up = (jnp.asarray(rng.normal(size=(g, d, f)) * 0.3, jnp.float32) for _ in range(2))
    down = jnp.asarray(rng.normal(size=(g, f, d)) * 0.3, jnp.float32)
    sizes = jnp.asarray([13, 0, 22], jnp.int32)  # an empty group; 5 rows in no group

    def fused(rows, gate, up, down):
        return jnp.sum(jnp.sin(grouped_swiglu(rows, gate, up, down, sizes, "bf16", kernels.XLA)))

    def separate(rows, gate, up, down):
        dot = lambda lhs, rhs: jax.lax.ragged_dot(lhs, rhs, sizes)  # noqa: E731
        return jnp.sum(jnp.sin(dot(jax.nn.silu(dot(rows, gate)) * dot(rows, up), down)))

    assert_same_values_and_gradients(fused, separate, (rows, gate, up, down),
                                     ("rows", "gate", "up", "down"))


def test_gate_and_up_stay_apart_where_the_mesh_splits_their_columns(monkeypatch):
    """Concatenating weights along a dim split over devices would move shards between them: with
    a `tensor` axis (which splits F) SwiGLU keeps two GEMMs, and computes the same."""
    assert not may_split("mlp")  # no mesh: one GEMM
    d, f = 16, 24
    mlp = SwiGLU(d, f, std=0.3, param_dtype=jnp.float32, rngs=nnx.Rngs(1))
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, d)), jnp.float32)
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((2, 1), ("tensor", "fsdp"))):
        assert may_split("mlp") and not may_split("embed")
        traced = str(jax.make_jaxpr(mlp)(x))  # an abstract mesh traces, runs nothing
    assert "concatenate" not in traced and traced.count("dot_general") == 3
    # The same branch run here (no devices to split over): the separate GEMMs' values.
    monkeypatch.setattr("r1jax.nn.mlp.may_split", lambda logical: True)
    with jax.default_matmul_precision("highest"):
        got = mlp(x)
        want = (jax.nn.silu(x @ mlp.gate[...]) * (x @ mlp.up[...])) @ mlp.down[...]
    numerics.assert_close(got, want, "SwiGLU", TOL)
