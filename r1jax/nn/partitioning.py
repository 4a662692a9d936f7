"""The one table mapping logical axis names to mesh axes, and activation constraints.

Weights and key activations are annotated with logical names (see r1jax/nn/params.py); this
table decides where each lands on the mesh (data, fsdp, expert, tensor). Model code calls
`constrain(x, names)`, which is a no-op when no mesh is set, so models run unchanged on one
device.

Every large weight is stored sharded over all of fsdp x expert x tensor (ZeRO-3 style; only the
`data` axis holds whole replicas). Tokens are split over `expert` as well as `data` and `fsdp`,
so for a weight outside the routed experts `expert` is one more FSDP axis. A dimension rarely
divides by 2048 devices alone (V3's d=7168 = 7 * 2^10), so the table names several mesh axes for
some logical names and each weight's dims share them out in order, each mesh axis used once:
  q_b (Q, H, N+R), kv_b (C, H, N+V): the latent dim takes `fsdp` (and `expert` where it still
      divides), heads take `tensor` and what is left. Heads stay whole per shard, so the
      absorbed decode einsums (q . W_UK, o . W_UV) split by head, and an HF kv_b_proj row block
      (one head's N+V rows) never straddles shards.
  o (H, V, D): heads take `tensor`, `fsdp` (or `expert`); the model dim takes what is left.
  q_a (D, Q), dense FFNs (D, F): the model dim takes `fsdp` (7168 does not divide by fsdp x
      expert = 2048 on V3's meshes), the other dim `expert`.
  routed experts (E, D, F): E takes `expert`, D `fsdp`, F `tensor` (expert parallelism).
Measured on V3 at 2048 devices (tests/test_sharding_plan.py): per-device parameter bytes within
1.1x of params / (fsdp x expert x tensor), where the old table (latent dims unsharded, model dim
on `fsdp` only) left 15.4 GiB per device against an ideal 1.24 GiB.
"""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert", "tensor")

# Logical name -> mesh axes in order of preference (or None = replicated). A weight's dims are
# resolved in order; each takes the listed axes that are still unused by the earlier dims and
# that keep the dim divisible (see `logical_to_spec`).
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp", "expert"),  # tokens are spread over every non-tensor axis
    "length": None,
    "embed": ("fsdp", "expert"),  # ZeRO-3 style: the model dim over the FSDP axes
    "vocab": ("tensor", "expert"),
    "heads": ("tensor", "fsdp", "expert"),
    "kv_heads": "tensor",  # GQA key/value heads (Qwen2, Llama); replicated where tensor does not divide them
    "mlp": ("tensor", "expert"),  # taken by `expert` only outside the routed experts (E has it)
    "q_lora": ("fsdp", "expert"),
    "kv_lora": ("fsdp", "expert"),
    "expert": "expert",  # routed experts live on their expert-parallel shard
    "layers": None,
}


def logical_to_spec(axes, shape=None, mesh_shape: dict[str, int] | None = None) -> P:
    """PartitionSpec for logical `axes`. A mesh axis is used at most once per spec, by the first
    dim whose rule names it. With `shape` and `mesh_shape`, each dim keeps only the mesh axes
    (of size > 1) whose product with those it already took still divides it: a 4-head toy model
    on tensor=8 is replicated over tensor, and d=7168 on fsdp=32, expert=64 takes fsdp alone,
    leaving expert to the weight's next dim."""
    used, spec = set(), []
    for i, name in enumerate(axes):
        target = LOGICAL_AXIS_RULES.get(name) if name is not None else None
        target = (target,) if isinstance(target, str) else tuple(target or ())
        target = tuple(a for a in target if a not in used)
        if mesh_shape is not None:
            kept, size = [], 1
            for a in target:
                if a not in mesh_shape or mesh_shape[a] == 1:
                    continue
                if shape is not None and shape[i] % (size * mesh_shape[a]):
                    continue
                kept.append(a)
                size *= mesh_shape[a]
            target = tuple(kept)
        used.update(target)
        spec.append(target[0] if len(target) == 1 else (target or None))
    return P(*spec)


def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    """with_sharding_constraint by logical names under the ambient mesh; identity without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    spec = logical_to_spec(axes, x.shape, dict(mesh.shape))
    return jax.lax.with_sharding_constraint(x, spec)


def may_split(logical: str) -> bool:
    """Whether the ambient mesh may split dims named `logical`: a mesh axis of its rule has size
    > 1. Code that concatenates weights along such a dim (one GEMM for two weights) keeps them
    apart instead: a concatenation along a split dim moves shards between devices."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return False
    rule = LOGICAL_AXIS_RULES[logical]
    names = () if rule is None else (rule,) if isinstance(rule, str) else rule
    return any(dict(mesh.shape).get(a, 1) > 1 for a in names)


def lookup_table(table: jax.Array) -> jax.Array:
    """An embedding table (V, D) ready for `table[tokens]`: gathered over the vocab's mesh axes,
    only D left split (FSDP). XLA's SPMD partitioner (jax 0.11.2) aborts ("Check failed:
    grouped_sharding.device_groups.num_groups() == ...") on a gather from a table split over
    (expert, fsdp) when the tokens are split over (fsdp, expert)."""
    return constrain(table, (None, "embed"))  # (V, D)
