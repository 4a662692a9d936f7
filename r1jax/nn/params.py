"""Parameter creation with logical axis names, and the routing-bias variable type.

Every weight carries `axes` metadata: one logical name per dimension (`embed`, `vocab`, `heads`,
`q_lora`, `kv_lora`, `mlp`, `expert`, ...). `r1jax/sharding.py` maps those names to mesh axes in
one table; no model code ever names a mesh axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class RoutingBias(nnx.Variable):
    """The aux-loss-free expert bias b_i [V3 eq. 16]: used only for expert selection, updated by
    the balancing rule after each step (never by gradients), so it is its own variable type and
    training code can split it from the trainable `nnx.Param`s."""


def normal_param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...],
                 std: float, dtype) -> nnx.Param:
    if len(shape) != len(axes):
        raise ValueError(f"{shape=} and {axes=} must have the same rank")
    value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
    return nnx.Param(value.astype(dtype), axes=axes)


def ones_param(shape: tuple[int, ...], axes: tuple[str | None, ...], dtype) -> nnx.Param:
    return nnx.Param(jnp.ones(shape, dtype), axes=axes)


def variable_axes(state: nnx.State):
    """Pure-dict tree of the logical axes of every variable in `state`."""
    return nnx.to_pure_dict(
        jax.tree.map(lambda v: v.get_metadata().get("axes"), state,
                     is_leaf=lambda x: isinstance(x, nnx.Variable)))


def merge_params(abstract_module: nnx.Module, params: dict):
    """The module `abstract_module` describes, holding `params` (a pure dict, e.g. tracers)."""
    graphdef, state = nnx.split(abstract_module)
    try:
        nnx.replace_by_pure_dict(state, params)
    except (KeyError, ValueError) as e:
        raise ValueError(f"params do not match the config's structure: {e}") from e
    return nnx.merge(graphdef, state)
