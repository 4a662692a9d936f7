"""DeepSeekMoE: shared experts plus routed experts with group-limited top-k routing [V3 §2.1.2].

Axis glossary: B batch, T tokens, N = B*T, D hidden, E routed experts, K experts per token,
F expert hidden (moe_intermediate_size), G expert groups.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.config import ModelConfig
from r1jax.nn import kernels
from r1jax.nn.balance import sequence_balance_loss
from r1jax.nn.mlp import SwiGLU
from r1jax.nn.moe_dispatch import routed_experts
from r1jax.nn.params import RoutingBias, normal_param


def route_tokens(scores: jax.Array, bias: jax.Array, *, top_k: int, n_group: int,
                 topk_group: int, method: str, norm_topk_prob: bool,
                 scaling: float) -> tuple[jax.Array, jax.Array]:
    """Pick K experts per token; returns (weights (N, K), indices (N, K)).

    Selection uses the biased scores s + b (noaux_tc) restricted to the `topk_group` groups with
    the highest sum of their top-2 biased scores; the gate weights use the unbiased scores s
    [V3 eqs. 13, 16]. Ties go to the lower expert/group index (lax.top_k is stable).
    """
    n, e = scores.shape
    choice = scores + bias.astype(scores.dtype) if method == "noaux_tc" else scores
    if n_group > 1 and method != "greedy":
        grouped = choice.reshape(n, n_group, e // n_group)  # (N, G, E/G)
        if method == "noaux_tc":
            group_score = jax.lax.top_k(grouped, min(2, e // n_group))[0].sum(-1)  # (N, G)
        else:  # group_limited_greedy (V2): the best expert of each group
            group_score = grouped.max(-1)
        _, kept = jax.lax.top_k(group_score, topk_group)  # (N, topk_group)
        group_mask = jax.nn.one_hot(kept, n_group, dtype=jnp.bool_).any(-2)  # (N, G)
        expert_mask = jnp.repeat(group_mask, e // n_group, axis=-1)  # (N, E)
        choice = jnp.where(expert_mask, choice, -jnp.inf)
    _, indices = jax.lax.top_k(choice, top_k)  # (N, K)
    weights = jnp.take_along_axis(scores, indices, axis=-1)  # (N, K) unbiased s
    if norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
    return weights * scaling, indices


class MoE(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, e, f, pd = cfg.hidden_size, cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.param_dtype
        std = cfg.init_std
        self.router = normal_param(rngs, (d, e), ("embed", None), std, pd)
        self.bias = RoutingBias(jnp.zeros((e,), jnp.float32), axes=(None,))
        self.gate = normal_param(rngs, (e, d, f), ("expert", "embed", "mlp"), std, pd)
        self.up = normal_param(rngs, (e, d, f), ("expert", "embed", "mlp"), std, pd)
        self.down = normal_param(rngs, (e, f, d), ("expert", "mlp", "embed"), std, pd)
        self.shared = (SwiGLU(d, f * cfg.n_shared_experts, std=std, param_dtype=pd, rngs=rngs,
                              precision=cfg.precision, kernels=cfg.kernels)
                       if cfg.n_shared_experts else None)

    def __call__(self, x: jax.Array, token_mask: jax.Array | None = None):
        """x (B, T, D) -> (y (B, T, D), aux with `expert_load` (E,) and `balance_loss` ())."""
        cfg = self.cfg
        b, t, d = x.shape
        n, k, e = b * t, cfg.num_experts_per_tok, cfg.n_routed_experts
        xf = x.reshape(n, d)
        # The gate stays in float32 (V3 §3.3 keeps MoE gating out of low precision).
        logits = xf.astype(jnp.float32) @ self.router[...].astype(jnp.float32)  # (N, E)
        scores = (jax.nn.sigmoid(logits) if cfg.scoring_func == "sigmoid"
                  else jax.nn.softmax(logits, axis=-1))
        weights, indices = route_tokens(
            scores, jax.lax.stop_gradient(self.bias[...]), top_k=k, n_group=cfg.n_group,
            topk_group=cfg.topk_group, method=cfg.topk_method,
            norm_topk_prob=cfg.norm_topk_prob, scaling=cfg.routed_scaling_factor)

        flat_expert = indices.reshape(-1)  # (N*K,)
        # Dispatch without dropping tokens: grouped matmul over pairs sorted by expert, expert-
        # parallel when the ambient mesh has an `expert` axis (r1jax/nn/moe_dispatch.py).
        # .get_value(): an expert weight may be an FP8 checkpoint's QuantizedArray (nn/linear.py).
        y = routed_experts(xf, weights, indices, self.gate.get_value(), self.up.get_value(),
                           self.down.get_value(), n_experts=e, precision=cfg.precision,
                           choice=kernels.kernel_choice(cfg.kernels)).reshape(b, t, d)
        if self.shared is not None:
            y = y + self.shared(x)

        mask = jnp.ones((b, t), jnp.float32) if token_mask is None else token_mask.astype(jnp.float32)
        load = jnp.bincount(flat_expert, weights=jnp.repeat(mask.reshape(-1), k), length=e)
        balance = sequence_balance_loss(scores.reshape(b, t, e), indices.reshape(b, t, k), mask,
                                        cfg.seq_aux_alpha)
        return y, {"expert_load": load, "balance_loss": balance}
