"""What the Tunix rows hand to Tunix, built without importing it (so it is tested everywhere).

Tunix's sampler and GRPO learner take prompts as text and a tokenizer with encode/decode/bos_id/
eos_id/pad_id. The comparison runs on random token ids, so the "text" is the ids written out and
`IdTokenizer` reads them back: both sides see the same prompt ids, with no tokenizer in between.
"""

from __future__ import annotations

import numpy as np

from r1jax.models import qwen2


class IdTokenizer:
    """Text of space-separated token ids <-> the ids.

    eos_id is `vocab_size`, an id no model can sample, so no row stops early (as in the r1jax and
    HF rows, every row generates all the new tokens). pad_id is -1, not a real id: Tunix masks
    pad ids out of attention and out of the GRPO completion mask, so a sampled id 0 must not
    read as padding. There is no BOS (the prompts are random ids).
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str, **_) -> list[int]:
        ids = [int(t) for t in text.split()]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        return ids

    def decode(self, ids, **_) -> str:
        return " ".join(str(int(i)) for i in ids)

    def bos_id(self) -> None:
        return None

    def eos_id(self) -> int:
        return self.vocab_size

    def pad_id(self) -> int:
        return -1


def as_texts(tokens: np.ndarray) -> list[str]:
    """(R, P) prompt ids -> R texts for Tunix's samplers (IdTokenizer reads them back)."""
    return [" ".join(map(str, row)) for row in np.asarray(tokens).tolist()]


def tunix_qwen2_fields(cfg: qwen2.Qwen2Config) -> dict:
    """The fields of Tunix's `tunix.models.qwen2.model.ModelConfig` for our Qwen2 config (the
    architecture is the same: biases on q/k/v, RMSNorm, SwiGLU, RoPE over the whole head)."""
    if not isinstance(cfg, qwen2.Qwen2Config):
        raise TypeError(f"the Tunix rows compare Qwen2 models; got {type(cfg).__name__}")
    return {"num_layers": cfg.num_layers, "vocab_size": cfg.vocab_size,
            "embed_dim": cfg.hidden_size, "hidden_dim": cfg.intermediate_size,
            "num_heads": cfg.num_heads, "head_dim": cfg.head_dim,
            "num_kv_heads": cfg.num_kv_heads, "rope_theta": cfg.rope_theta,
            "norm_eps": cfg.rms_norm_eps, "use_tied_embedding": cfg.tie_word_embeddings}
