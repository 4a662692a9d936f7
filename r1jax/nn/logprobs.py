"""Log-probabilities of chosen tokens, shared by every loss (LM, GRPO, distillation)."""

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log π(tokens[n, t] | ...) from logits (N, T, V) aligned with tokens (N, T); fp32.

    Computed as logit[token] - logsumexp(logits): the same value as a log_softmax gather without
    materialising a second (N, T, V) array. The caller aligns logits with the NEXT token.
    """
    logits = logits.astype(jnp.float32)  # (N, T, V)
    picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]  # (N, T)
    return picked - jax.nn.logsumexp(logits, axis=-1)  # (N, T)
