"""Parameter counts from abstract shapes: total, with MTP, and activated per token."""

from __future__ import annotations

import math

import jax

from r1jax.config import ModelConfig
from r1jax.models import dense
from r1jax.models.api import abstract_params


def _size(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Counts without allocating. `activated` is what one token touches in the main model: all
    non-routed params plus K of the E routed experts per MoE layer (embedding and head
    included, as DeepSeek counts 37B). Routing biases count as params here (tiny).
    A dense student's config (Qwen2Config, LlamaConfig) gets the counts of `dense.count_params`
    (with `non_embedding`)."""
    if isinstance(cfg, dense.DenseConfig):
        return dense.count_params(cfg)
    p = abstract_params(cfg)
    mtp = _size(p.get("mtp", {}))
    total = _size(p) - mtp
    routed = sum(_size({k: layer["moe"][k] for k in ("gate", "up", "down")})
                 for layer in p["layers"].values() if "moe" in layer)
    inactive = routed * (1 - cfg.num_experts_per_tok / cfg.n_routed_experts)
    return {"total": total, "total_with_mtp": total + mtp, "mtp": mtp,
            "activated": int(round(total - inactive))}


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, as MFU counts them: 6 * (activated matmul params) for forward +
    backward, plus causal attention 3 * 2 * (d_qk + d_v) * H * T/2 per layer (QK^T and PV,
    forward x3). The embedding lookup is not a matmul and is left out; the head is counted.
    MTP modules count like one more MoE layer each plus their eh_proj and head."""
    if isinstance(cfg, dense.DenseConfig):
        return dense.train_flops_per_token(cfg, seq_len)
    c = count_params(cfg)
    embed = cfg.vocab_size * cfg.hidden_size
    matmul_params = c["activated"] - embed * (0 if cfg.tie_word_embeddings else 1)
    if cfg.num_mtp_modules:
        per_mtp = c["mtp"] / cfg.num_mtp_modules
        moe_inactive = 3 * cfg.hidden_size * cfg.moe_intermediate_size * (
            cfg.n_routed_experts - cfg.num_experts_per_tok)
        matmul_params += cfg.num_mtp_modules * (per_mtp - moe_inactive + embed)
    attn = 3 * (cfg.num_layers + cfg.num_mtp_modules) * cfg.num_heads * (
        cfg.qk_head_dim + cfg.v_head_dim) * seq_len
    return 6.0 * matmul_params + attn
