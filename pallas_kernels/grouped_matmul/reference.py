"""Grouped (ragged) matmul for MoE experts in plain jnp: the truth for the kernel.

Rows of `lhs` are tokens sorted by expert; group g owns `group_sizes[g]`
consecutive rows and multiplies them by `rhs[g]`. Rows past sum(group_sizes)
produce zeros, exactly like `jax.lax.ragged_dot`.
"""

import jax
import jax.numpy as jnp


def row_groups(group_sizes, m: int):
  """Expert index of each of the m rows; G for rows past the last group."""
  ends = jnp.cumsum(group_sizes)  # (G,)
  return jnp.searchsorted(ends, jnp.arange(m), side="right")  # (M,)


def grouped_matmul(lhs, rhs, group_sizes, *, preferred_element_type=None):
  """out[i] = lhs[i] @ rhs[group(i)]: lhs (M,K), rhs (G,K,N), group_sizes (G,) -> (M,N)."""
  out_dtype = preferred_element_type or lhs.dtype
  m = lhs.shape[0]
  g = rhs.shape[0]
  groups = row_groups(group_sizes, m)  # (M,)
  onehot = (groups[:, None] == jnp.arange(g)[None, :]).astype(jnp.float32)  # (M, G)
  per_group = jnp.einsum("mk,gkn->mgn", lhs.astype(jnp.float32), rhs.astype(jnp.float32),
                         precision=jax.lax.Precision.HIGHEST)  # (M, G, N)
  return jnp.einsum("mgn,mg->mn", per_group, onehot).astype(out_dtype)

