"""Load balancing for DeepSeekMoE: the aux-loss-free bias rule and the sequence-wise loss.

Axis glossary: B batch, T tokens, E routed experts, K experts per token.
"""

import jax
import jax.numpy as jnp


def update_routing_bias(bias: jax.Array, load: jax.Array, speed: float) -> jax.Array:
    """b_i += gamma * sign(mean_load - load_i) [V3 §2.1.2]: overloaded experts become less
    attractive to the top-k selection, underloaded ones more. Pure; the train step applies it
    after each step with the load summed over the whole (global) batch.

    bias, load: (..., E), a leading layer dim is allowed.
    """
    load = load.astype(jnp.float32)
    mean = jnp.mean(load, axis=-1, keepdims=True)
    return (bias.astype(jnp.float32) + speed * jnp.sign(mean - load)).astype(bias.dtype)


def sequence_balance_loss(scores: jax.Array, indices: jax.Array, mask: jax.Array | None,
                          alpha: float) -> jax.Array:
    """L_Bal = alpha * sum_i f_i P_i, averaged over sequences [V3 eqs. 17-20].

    scores:  (B, T, E) unbiased affinities s_{i,t} (sigmoid or softmax outputs)
    indices: (B, T, K) the experts each token was routed to
    mask:    (B, T) 1 for real tokens; padding does not count toward T.
    """
    b, t, e = scores.shape
    k = indices.shape[-1]
    mask = jnp.ones((b, t), jnp.float32) if mask is None else mask.astype(jnp.float32)
    n_tokens = jnp.maximum(mask.sum(-1, keepdims=True), 1.0)  # (B, 1)
    chosen = jax.nn.one_hot(indices, e, dtype=jnp.float32).sum(-2)  # (B, T, E)
    f = (e / (k * n_tokens)) * jnp.einsum("bte,bt->be", chosen, mask)  # (B, E)
    normed = scores / jnp.sum(scores, axis=-1, keepdims=True)  # s'_{i,t}
    p = jnp.einsum("bte,bt->be", normed.astype(jnp.float32), mask) / n_tokens  # (B, E)
    return alpha * jnp.mean(jnp.sum(f * p, axis=-1))
