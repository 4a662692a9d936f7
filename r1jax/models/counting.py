"""Parameter counts from abstract shapes: total, with MTP, and activated per token."""

from __future__ import annotations

import math

import jax

from r1jax.config import ModelConfig
from r1jax.models.api import abstract_params


def _size(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Counts without allocating. `activated` is what one token touches in the main model: all
    non-routed params plus K of the E routed experts per MoE layer (embedding and head
    included, as DeepSeek counts 37B). Routing biases count as params here (tiny)."""
    p = abstract_params(cfg)
    mtp = _size(p.get("mtp", {}))
    total = _size(p) - mtp
    routed = sum(_size({k: layer["moe"][k] for k in ("gate", "up", "down")})
                 for layer in p["layers"].values() if "moe" in layer)
    inactive = routed * (1 - cfg.num_experts_per_tok / cfg.n_routed_experts)
    return {"total": total, "total_with_mtp": total + mtp, "mtp": mtp,
            "activated": int(round(total - inactive))}
