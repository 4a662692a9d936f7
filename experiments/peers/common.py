"""What every peer comparison shares: the shapes, the two models, the prompts, the reward of the
GRPO rows and the interleaved timer."""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

from r1jax import config
from r1jax.models import qwen2


@dataclasses.dataclass(frozen=True)
class Shapes:
    train_batch: int = 8
    train_seq: int = 256
    gen_rows: int = 16
    gen_prompt: int = 32
    gen_new: int = 128
    # GRPO rows (Qwen2 small): prompts x samples each, prompt length, new tokens.
    grpo_prompts: int = 8
    grpo_samples: int = 4
    grpo_prompt: int = 32
    rollout_new: int = 64
    grpo_new: int = 96


QUICK = Shapes(train_batch=2, train_seq=32, gen_rows=2, gen_prompt=8, gen_new=8, grpo_prompts=2,
               grpo_samples=2, grpo_prompt=8, rollout_new=8, grpo_new=8)


def deepseek_small() -> config.ModelConfig:
    """4 layers (1 dense + 3 MoE), hidden 256, MLA, 8 routed experts top-2, no MTP (HF has none)."""
    return config.deepseek_v3_small()


def qwen2_small() -> qwen2.Qwen2Config:
    return qwen2.tiny(vocab_size=1024, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=2,
                      head_dim=32, intermediate_size=512, max_position_embeddings=512)


def random_prompts(vocab_size: int, rows: int, length: int, seed: int = 2) -> np.ndarray:
    """(rows, length) int32 token ids in [1, vocab): no padding, so every side sees the same
    unpadded prompts."""
    return np.random.default_rng(seed).integers(1, vocab_size, (rows, length)).astype(np.int32)


def even_token_share(tokens: np.ndarray) -> np.ndarray:
    """The GRPO rows' reward: the share of even token ids in each completion (R, N) -> (R,).
    Any cheap host function would do; this one gives groups unequal rewards, so the advantages
    are not all zero."""
    return (np.asarray(tokens) % 2 == 0).mean(axis=-1).astype(np.float32)


def interleaved(ours, peer, repeats: int) -> tuple[float, float, float]:
    """(first call of ours, median of ours, median of peer): one warm-up each, then alternating."""
    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    peer()
    times = {ours: [], peer: []}
    for _ in range(repeats):
        for fn in (ours, peer):
            t0 = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t0)
    return first, statistics.median(times[ours]), statistics.median(times[peer])
