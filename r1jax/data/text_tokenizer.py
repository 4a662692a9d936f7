"""The tokenizer interface the data pipelines, rollouts and recipe use, whichever tokenizer it is.

Two implementations: `r1jax.data.tokenizer.Tokenizer`, the sentencepiece model trained on the
embedded corpus (the miniature's default, no files needed), and
`r1jax.data.hf_tokenizer.HFTokenizer`, a Hugging Face checkpoint's `tokenizer.json` with its
special tokens and chat template. `r1jax.data.tokenizer_files.load_tokenizer(path)` picks one.

The contract the callers rely on:
- `encode(text)` gives ids without bos/eos: callers add `bos_id` where a document starts (when
  the tokenizer has one) and `eos_id` where it ends.
- `decode(ids)` drops special tokens (pad, bos, eos, and for checkpoints every token marked
  special), so a completion's text is what the verifier and the rewards read.
- `bos_id`, `unk_id` may be None: byte-level BPE checkpoints (Qwen2.5) have no bos and cannot
  produce an unknown token. `eos_id` is always set: sampling stops on it. `pad_id` is always set
  (eos for checkpoints that name no pad token): masks, not the id, say where padding is.
- `vocab_size` is one past the largest id the tokenizer can produce (added tokens included); a
  model's embedding table may be larger.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Iterable, Mapping, Sequence

# BPE may segment the last few tokens of a cut text differently from the whole text (a cut inside
# a word or a tag); at most 4 differed on the corpus and on random text, so 16 spare tokens keep
# every returned token equal to the whole text's.
_CUT_MARGIN_TOKENS = 16


class TextTokenizer(abc.ABC):
    """Text <-> token ids, the special ids, and the chat template of one model."""

    pad_id: int
    bos_id: int | None
    eos_id: int
    unk_id: int | None

    @property
    @abc.abstractmethod
    def path(self) -> str:
        """Where it was loaded from (a .model file or a checkpoint directory): `load_tokenizer`
        of it gives the same tokenizer, so configs can pass a tokenizer on as a string."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        ...

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without bos/eos."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens dropped."""

    @abc.abstractmethod
    def id_to_piece(self, token_id: int) -> str:
        ...

    @abc.abstractmethod
    def piece_to_id(self, piece: str) -> int | None:
        ...

    @abc.abstractmethod
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = False, **template_kwargs) -> str:
        """The conversation as the text the model was trained on (not tokenized: `encode` it)."""

    @abc.abstractmethod
    def _piece_lengths(self) -> Iterable[int]:
        """Characters of text each token can stand for, or more (an overstatement only makes
        `encode_prefix` cut longer)."""

    @functools.cached_property
    def max_piece_chars(self) -> int:
        """The most characters one token stands for: `n * max_piece_chars` characters of text
        encode to at least n tokens."""
        return max(1, max(self._piece_lengths(), default=1))

    def encode_prefix(self, text: str, max_tokens: int) -> list[int]:
        """`encode(text)[:max_tokens]`, tokenizing only a prefix of `text` long enough to hold
        them: a 10 MB document costs what its first `max_tokens` tokens cost."""
        if max_tokens <= 0:
            return []
        limit = (max_tokens + _CUT_MARGIN_TOKENS) * self.max_piece_chars
        while limit < len(text):
            ids = self.encode(text[:limit])
            if len(ids) >= max_tokens + _CUT_MARGIN_TOKENS:
                return ids[:max_tokens]
            limit *= 2  # a normalisation that shortens text (collapsed spaces) left too few tokens
        return self.encode(text)[:max_tokens]
