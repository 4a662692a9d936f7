"""The one table mapping logical axis names to mesh axes, and activation constraints.

Weights and key activations are annotated with logical names (see r1jax/nn/params.py); this
table decides where each lands on the mesh (data, fsdp, expert, tensor). Model code calls
`constrain(x, names)`, which is a no-op when no mesh is set, so models run unchanged on one
device.
"""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert", "tensor")

# Logical name -> mesh axis (or tuple of axes, or None = replicated).
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp", "expert"),  # tokens are spread over every non-tensor axis
    "length": None,
    "embed": "fsdp",  # ZeRO-3 style: weights sharded along the model dim over fsdp
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",  # GQA key/value heads (Qwen2, Llama); replicated where tensor does not divide them
    "mlp": "tensor",
    "q_lora": None,
    "kv_lora": None,
    "expert": "expert",  # routed experts live on their expert-parallel shard
    "layers": None,
}


def logical_to_spec(axes, shape=None, mesh_shape: dict[str, int] | None = None) -> P:
    """PartitionSpec for logical `axes`. With `shape` and `mesh_shape`, a dimension that the
    mesh axes do not divide is replicated instead (e.g. a 4-head toy model on tensor=8), and a
    mesh axis is used at most once per spec."""
    used, spec = set(), []
    for i, name in enumerate(axes):
        target = LOGICAL_AXIS_RULES.get(name) if name is not None else None
        target = (target,) if isinstance(target, str) else tuple(target or ())
        target = tuple(a for a in target if a not in used)
        if mesh_shape is not None:
            target = tuple(a for a in target if a in mesh_shape and mesh_shape[a] > 1)
            size = 1
            for a in target:
                size *= mesh_shape[a]
            if shape is not None and shape[i] % size:
                target = ()
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
