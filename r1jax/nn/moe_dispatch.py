"""Routed-expert FFN of DeepSeekMoE without token dropping, on one device or expert-parallel.

Axis glossary: N tokens, D hidden, K experts per token, E routed experts, F expert hidden,
ep expert shards (mesh axis `expert`), tp tensor shards (mesh axis `tensor`), n = N / (token
shards) tokens per device, El = E / ep local experts, M rows of the grouped matmul.

y[n] = sum_k weights[n, k] * SwiGLU_{indices[n, k]}(x[n])  [V3 eq. 12, routed term].

One device (no `expert` axis of size > 1 in the ambient mesh): sort the N*K (token, expert)
pairs by expert and run one grouped matmul (`jax.lax.ragged_dot`) over the contiguous groups,
then scatter-add the weighted rows back to their tokens. Every pair is computed: no capacity,
no dropping, as in DeepSeek-V3.

Expert parallel (ambient mesh with an `expert` axis of size ep > 1): a `jax.shard_map` with
tokens sharded over the batch axes (`data`, `fsdp`, `expert`), experts over `expert` and the
expert hidden F over `tensor`. Each device all-gathers the tokens of its `expert` group,
computes the pairs that route to its El local experts (a grouped matmul over a buffer of
ep*n*K rows: the worst case where every pair of the group lands here, so nothing is dropped),
and a `psum_scatter` over `expert` (plus a `psum` over `tensor`) sums the partial outputs and
returns each device its own n tokens. The transposes of these collectives give the backward pass.

Why all_gather + psum_scatter (measured on XLA:CPU, jax 0.11.2, 8 host devices):
- `jax.lax.ragged_all_to_all` (what DeepSeek-V3's dispatch does: send each token only where it
  is routed) fails to compile on CPU: "HLO opcode `ragged-all-to-all` is not supported by
  XLA:CPU ThunkEmitter".
- `jax.lax.all_to_all` on fixed buffers drops nothing only if every destination's buffer holds
  all n*K local pairs: it sends ep*n*K*D values per device, K times the ep*n*D of an
  all_gather, and the receiver's grouped matmul still runs over ep*n*K rows. Sending tokens
  once per destination (capacity n) would make it an all_gather with extra index bookkeeping.
  Measured (forward + grad, best of 5, N=1024 D=128 F=64 E=32 K=8, mesh (1,1,8,1) of 8 host
  devices on 2 busy cores): all_gather + psum_scatter 1.81 s, all_to_all of assignment buffers
  1.91 s, one device 1.96 s. On CPU the grouped matmul dominates: XLA:CPU lowers ragged_dot to a
  masked dense product costing M*G*D*F, the same for both exchanges; the bytes moved decide.
Where `ragged_all_to_all` compiles (GPU, TPU) it sends n*K rows per device instead of the
all_gather's ep*n (K/ep as much at V3's ep=64, K=8): the next step for large expert meshes.

The grouped matmul follows `precision`: the FP8 recipes ("fp8_v3", "fp8_per_tensor") run their own
grouped GEMM (r1jax/nn/fp8_ragged.py); "bf16" runs `kernels.ragged_dot`, which `choice` (a
`KernelChoice`, r1jax/nn/kernels.py) puts on the Mosaic GPU kernel of pallas_kernels/grouped_matmul
(custom_vjp for training) where it can run; without a kernel, on CPU, on a batched GEMM over
group-aligned row tiles whose cost follows the routed rows (r1jax/nn/ragged_tiles.py; the masked
dense product above is `kernels="xla_reference"`), and on `jax.lax.ragged_dot` elsewhere.

Expert weights kept in E4M3 from an FP8 checkpoint (128x128 `QuantizedArray`s, see
r1jax/nn/linear.py) run only under "fp8_v3" and on one device: their block grid would have to
line up with the `tensor` split of F, which the expert-parallel path does not arrange.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from r1jax.nn import kernels
from r1jax.nn.fp8_quant import QuantizedArray, check_recipe
from r1jax.nn.fp8_ragged import fp8_ragged_dot
from r1jax.nn.kernels import KernelChoice
from r1jax.nn.partitioning import may_split

EXPERT_AXIS = "expert"
TENSOR_AXIS = "tensor"
# Tokens are sharded over the product of these: the `expert` shards hold distinct tokens too, so
# no device computes a token twice and the all_gather over `expert` rebuilds one token group.
TOKEN_AXES = ("data", "fsdp", "expert")


def grouped_swiglu(rows: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array,
                   group_sizes: jax.Array, precision: str, choice: KernelChoice,
                   max_group_size: int | None = None) -> jax.Array:
    """SwiGLU of rows sorted by expert: rows (M, D), gate/up (G, D, F), down (G, F, D) -> (M, D).

    Rows past sum(group_sizes) belong to no group and come out as zeros. `max_group_size`: a
    bound on every group's size, if known (the grouped GEMMs may then read weights in place).
    """
    def matmul(lhs, rhs):  # (M, K) x (G, K, N) -> (M, N)
        if precision == "bf16":
            return kernels.ragged_dot(lhs, rhs, group_sizes, choice=choice,
                                      max_group_size=max_group_size)
        return fp8_ragged_dot(lhs, rhs, group_sizes, precision, choice=choice)

    if precision == "bf16" and not may_split("mlp"):
        # gate and up read the same rows: one grouped GEMM against [gate | up] (G, D, 2F) gathers
        # and tiles the rows once and runs one dX GEMM in the backward instead of two summed.
        gate_up = jnp.concatenate([gate, up], axis=-1)  # (G, D, 2F)
        h, u = jnp.split(matmul(rows, gate_up), 2, axis=-1)  # (M, F) each
    else:  # FP8 (each weight keeps its own block scales), or F split over devices
        h, u = matmul(rows, gate), matmul(rows, up)  # (M, F) each
    return matmul(jax.nn.silu(h) * u, down)  # (M, D)


def local_expert_outputs(x: jax.Array, weights: jax.Array, indices: jax.Array, gate: jax.Array,
                         up: jax.Array, down: jax.Array, first_expert: jax.Array | int,
                         precision: str, choice: KernelChoice) -> jax.Array:
    """sum_k weights * SwiGLU over the pairs routed to experts [first_expert, first_expert + G).

    x (N, D), weights/indices (N, K), gate/up (G, D, F), down (G, F, D) -> (N, D). Pairs routed
    elsewhere sort behind all groups (expert id G), so the grouped matmul skips them.
    """
    n, k = indices.shape
    g = gate.shape[0]
    local = indices.reshape(-1) - first_expert  # (N*K,)
    local = jnp.where((local >= 0) & (local < g), local, g)  # (N*K,) G = not here
    order = jnp.argsort(local, stable=True)  # (N*K,)
    token_of = order // k  # (N*K,) source token of each sorted row
    group_sizes = jnp.bincount(local, length=g + 1)[:g].astype(jnp.int32)  # (G,)
    # Each token's K experts are distinct (top-k routing): no expert holds more than N rows.
    out = grouped_swiglu(x[token_of], gate, up, down, group_sizes, precision, choice,
                         max_group_size=n)  # (N*K, D)
    # ragged_dot zero-fills rows outside every group; a custom kernel need not, so mask them.
    is_here = jnp.arange(n * k) < group_sizes.sum()  # (N*K,) rows in a local group
    row_weight = jnp.where(is_here, weights.reshape(-1)[order], 0).astype(x.dtype)  # (N*K,)
    return jnp.zeros_like(x).at[token_of].add(out * row_weight[:, None])  # (N, D)


def routed_experts(x: jax.Array, weights: jax.Array, indices: jax.Array, gate: jax.Array,
                   up: jax.Array, down: jax.Array, *, n_experts: int, precision: str = "bf16",
                   choice: KernelChoice = kernels.XLA) -> jax.Array:
    """y (N, D) in x.dtype = sum_k weights[n, k] * SwiGLU_{indices[n, k]}(x[n]); no token dropped.

    x (N, D); weights (N, K); indices (N, K) int in [0, n_experts), distinct within a row (as
    top-k gives); gate/up (E, D, F); down (E, F, D). Expert-parallel when the ambient mesh (`jax.set_mesh`) has an `expert` axis
    of size > 1; then N must divide by the token shards and E by the expert shards.
    `precision` is `ModelConfig.precision`, `choice` `kernels.kernel_choice(ModelConfig.kernels)`.
    """
    check_recipe(precision)
    if gate.shape[0] != n_experts or up.shape[0] != n_experts or down.shape[0] != n_experts:
        raise ValueError(f"{n_experts=} must match {gate.shape=}, {up.shape=}, {down.shape=}")
    if weights.shape != indices.shape or indices.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape=}, {weights.shape=} and {indices.shape=} disagree on (N, K)")
    mesh = jax.sharding.get_abstract_mesh()
    ep = mesh.shape.get(EXPERT_AXIS, 1) if not mesh.empty else 1
    kept_fp8 = [isinstance(w, QuantizedArray) for w in (gate, up, down)]
    if any(kept_fp8):
        if not all(kept_fp8) or precision != "fp8_v3":
            raise ValueError(f"expert weights kept in E4M3 from an FP8 checkpoint need all of "
                             f"gate/up/down kept and precision 'fp8_v3', not {precision!r} "
                             f"(kept: {kept_fp8}); or load with keep_fp8=False")
        if ep > 1:
            raise ValueError(f"expert weights kept in E4M3 run on one device, but the mesh has "
                             f"{EXPERT_AXIS}={ep}; load with keep_fp8=False for expert parallelism")
        return local_expert_outputs(x, weights, indices, gate, up, down, 0, precision, choice)
    dt = x.dtype
    gate, up, down = gate.astype(dt), up.astype(dt), down.astype(dt)
    if ep == 1:
        return local_expert_outputs(x, weights, indices, gate, up, down, 0, precision, choice)
    return _expert_parallel(x, weights, indices, gate, up, down, mesh, ep, precision, choice)


def _expert_parallel(x, weights, indices, gate, up, down, mesh, ep, precision, choice):
    token_axes = tuple(a for a in TOKEN_AXES if a in mesh.shape)
    token_shards = math.prod(mesh.shape[a] for a in token_axes)
    tp = mesh.shape.get(TENSOR_AXIS, 1)
    n_experts, _, f = gate.shape
    if x.shape[0] % token_shards:
        raise ValueError(f"{x.shape=}: the N={x.shape[0]} tokens must divide by the "
                         f"{token_shards} token shards of mesh axes {token_axes} {dict(mesh.shape)}")
    if n_experts % ep:
        raise ValueError(f"{gate.shape=}: the E={n_experts} experts must divide by the "
                         f"{EXPERT_AXIS}={ep} mesh axis")
    if f % tp:
        raise ValueError(f"{gate.shape=}: the F={f} expert hidden size must divide by the "
                         f"{TENSOR_AXIS}={tp} mesh axis")
    f_axis = TENSOR_AXIS if tp > 1 else None
    tokens = P(token_axes)

    def per_device(x, weights, indices, gate, up, down):
        # x (n, D), weights/indices (n, K); gate/up (El, D, F/tp), down (El, F/tp, D).
        group_x = jax.lax.all_gather(x, EXPERT_AXIS, tiled=True)  # (ep*n, D)
        group_w = jax.lax.all_gather(weights, EXPERT_AXIS, tiled=True)  # (ep*n, K)
        group_i = jax.lax.all_gather(indices, EXPERT_AXIS, tiled=True)  # (ep*n, K)
        first_expert = jax.lax.axis_index(EXPERT_AXIS) * gate.shape[0]
        partial = local_expert_outputs(group_x, group_w, group_i, gate, up, down, first_expert,
                                       precision, choice)  # (ep*n, D) this device's experts, F shard
        y = jax.lax.psum_scatter(partial, EXPERT_AXIS, tiled=True)  # (n, D)
        return jax.lax.psum(y, TENSOR_AXIS) if tp > 1 else y

    args = (x, weights, indices, gate, up, down)
    in_specs = (tokens, tokens, tokens, P(EXPERT_AXIS, None, f_axis), P(EXPERT_AXIS, None, f_axis),
                P(EXPERT_AXIS, f_axis, None))
    if any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
        # Explicit axes carry shardings in the types: shard_map wants them equal to in_specs.
        args = tuple(jax.reshard(a, s) for a, s in zip(args, in_specs))
    return jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=tokens)(*args)
