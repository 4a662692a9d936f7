"""Prompt batches for sampling, and decoding what was sampled.

A prompt batch is a dict: `prompt_tokens` (B, P) int32 and `prompt_mask` (B, P) bool, left-padded
so every prompt ends in column P-1 (`r1jax.data.pipeline.rl_prompt_features`), and `examples`, the
B example dicts their verifiers read. GRPO draws its batches from a grain pipeline
(`r1jax.data.rl_prompt_batches`, checkpointable); evaluation and rejection sampling walk a fixed
list of problems with `prompt_batches`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from r1jax.data import chat
from r1jax.data.chat_prompts import opened_by_template
from r1jax.data.pipeline import rl_batch, rl_prompt_features
from r1jax.data.text_tokenizer import TextTokenizer


def prompt_batches(tok: TextTokenizer, problems: Sequence[dict], *, batch_size: int, max_prompt_len: int,
                   system: str = chat.SHORT_SYSTEM) -> Iterator[tuple[dict, int]]:
    """(batch, number of real prompts) per `batch_size` problems, in order. The last batch is
    padded with copies of its last problem, so a jitted sampler compiles once."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not problems:
        raise ValueError("problems is empty")
    for first in range(0, len(problems), batch_size):
        rows = [rl_prompt_features(tok, ex, max_prompt_len, system=system)
                for ex in problems[first:first + batch_size]]
        real = len(rows)
        rows += [rows[-1]] * (batch_size - real)
        yield rl_batch(rows), real


def decode_completions(tok: TextTokenizer, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Generated ids -> text, without the trailing EOS. Ids past the tokenizer's vocabulary (the
    model's embedding table may be larger) decode as unknown, or are dropped by tokenizers that
    have no unknown token (byte-level BPE). A chat template that opens the think block in its
    generation prompt wrote that opening, not the model: it is put back in front of each text
    (r1jax/data/chat_prompts.py), so verifiers and format rewards read the whole completion."""
    opened = opened_by_template(tok)
    out = []
    for row, n in zip(tokens, lengths):
        ids = [int(t) if int(t) < tok.vocab_size else tok.unk_id for t in row[:n]
               if int(t) != tok.eos_id]
        ids = [t for t in ids if t is not None]
        out.append(opened + tok.decode(ids))
    return out
