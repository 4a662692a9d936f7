"""Mesh construction and shardings of params, optimizer state and batches.

Parameters are born sharded: `jax.eval_shape(init)` gives shapes, the logical-axis table
(r1jax/nn/partitioning.py) gives a NamedSharding per leaf, and `jax.jit(init, out_shardings=...)`
materialises each shard on its own device.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r1jax.nn.fp8_quant import QuantizedArray
from r1jax.nn.partitioning import LOGICAL_AXIS_RULES, MESH_AXES, constrain, logical_to_spec

__all__ = ["MeshConfig", "make_mesh", "param_shardings", "batch_sharding", "batch_shards",
           "global_array", "replicated",
           "LOGICAL_AXIS_RULES", "MESH_AXES", "constrain", "logical_to_spec", "shardings_like"]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the mesh axes; one may be -1 to take the remaining devices."""

    data: int = -1
    fsdp: int = 1
    expert: int = 1
    tensor: int = 1

    def __post_init__(self):
        for axis in MESH_AXES:
            size = getattr(self, axis)
            if not isinstance(size, int) or isinstance(size, bool) or not (size == -1 or size >= 1):
                raise ValueError(f"MeshConfig.{axis}={size!r} must be a positive size or -1 "
                                 "(the devices the other axes leave)")

    def resolve(self, n_devices: int) -> tuple[int, ...]:
        sizes = [self.data, self.fsdp, self.expert, self.tensor]
        if sizes.count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1; got {self}")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if n_devices % known:
                raise ValueError(f"{n_devices} devices cannot fill mesh {self}: {known} does not divide it")
            sizes[sizes.index(-1)] = n_devices // known
        if math.prod(sizes) != n_devices:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                             f"but {n_devices} are available")
        return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    sizes = cfg.resolve(len(devices))
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def shardings_like(abstract_tree, axes_tree, mesh: Mesh):
    """NamedSharding per leaf of `abstract_tree` from the matching logical axes in `axes_tree`.

    A weight kept in E4M3 from an FP8 checkpoint (a QuantizedArray, r1jax/nn/linear.py) is
    replicated, values and scales alike: its block grid follows the flattened (K, N) matrix, not
    the logical axes, so such params are for single-device or replicated inference.
    """
    mesh_shape = dict(mesh.shape)

    def sharding(s, axes):
        if isinstance(s, QuantizedArray):
            return jax.tree.map(lambda _: NamedSharding(mesh, P()), s)
        return NamedSharding(mesh, logical_to_spec(axes, s.shape, mesh_shape))

    return jax.tree.map(sharding, abstract_tree, axes_tree,
                        is_leaf=lambda x: isinstance(x, (tuple, QuantizedArray)))


def param_shardings(model_cfg, mesh: Mesh):
    from r1jax import models

    return shardings_like(models.abstract_params(model_cfg), models.param_axes(model_cfg), mesh)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dim over data x fsdp x expert; the rest replicated (any rank >= 1)."""
    return NamedSharding(mesh, P(LOGICAL_AXIS_RULES["batch"]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
    """How many ways the batch axes split a batch's rows."""
    return math.prod(dict(mesh.shape)[axis] for axis in LOGICAL_AXIS_RULES["batch"])


def global_array(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array holding host value `x`, which every process has whole (each process places
    its addressable shards)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
