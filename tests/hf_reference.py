"""Tiny random Hugging Face DeepSeek-V3 models, built locally: the parity oracle; and r1jax params
made to show every tensor of a round trip."""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BASE = dict(
    vocab_size=97, hidden_size=48, intermediate_size=80, moe_intermediate_size=24,
    num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
    n_routed_experts=8, kv_lora_rank=24, q_lora_rank=32, qk_rope_head_dim=8, v_head_dim=12,
    qk_nope_head_dim=16, n_group=4, topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1,
    routed_scaling_factor=2.5, norm_topk_prob=True, max_position_embeddings=256,
    rms_norm_eps=1e-6, tie_word_embeddings=False,
)
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
        "original_max_position_embeddings": 32, "beta_fast": 32, "beta_slow": 1,
        "mscale": 1.0, "mscale_all_dim": 1.0}
NO_YARN = {"rope_type": "default", "rope_theta": 5000.0}


def randomize_weights(model, seed: int):
    """Every parameter random: norm scales 1 + 0.2 N(0,1), everything else 0.1 N(0,1)."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return gen


def build_hf_model(seed: int = 0, *, rope=YARN, **overrides):
    """A DeepseekV3ForCausalLM in float32 with every weight random (norm scales and routing
    biases too, so each code path is exercised), std 0.1 so logits are far from uniform."""
    kw = {**BASE, "rope_parameters": dict(rope), **overrides}
    cfg = transformers.DeepseekV3Config(**kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.DeepseekV3ForCausalLM(cfg).float().eval()
    gen = randomize_weights(model, seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                b.copy_(0.05 * torch.randn(b.shape, generator=gen))
    return model


def hf_logits(model, tokens: np.ndarray, attention_mask=None, positions=None) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                    attention_mask=None if attention_mask is None else torch.as_tensor(attention_mask),
                    position_ids=None if positions is None else torch.as_tensor(positions, dtype=torch.long))
    return out.logits.float().numpy()


def with_moved_norms_and_biases(params: dict) -> dict:
    """`params` with norm scales and biases moved off their initial 1 and 0 (by 0.1 N(0,1), keyed
    by the path), so a round trip that dropped or swapped one of them shows in the logits."""
    def move(path, x):
        if "scale" not in str(path) and "bias" not in str(path):
            return x
        return x + 0.1 * jax.random.normal(jax.random.key(len(jax.tree_util.keystr(path))), x.shape)

    return jax.tree_util.tree_map_with_path(move, params)
