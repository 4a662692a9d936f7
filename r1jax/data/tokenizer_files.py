"""`load_tokenizer(path)`: the tokenizer a path holds, whichever implementation reads it.

- a directory: a Hugging Face checkpoint (`tokenizer.json`, `tokenizer_config.json`,
  `chat_template.jinja`), read by `HFTokenizer`; one with no `tokenizer.json` but the embedded
  sentencepiece model as `tokenizer.model` (a pipeline stage exported by experiments/export.py)
  is read by `Tokenizer`;
- a `tokenizer.json` file: its directory, as above;
- any other file: a sentencepiece `.model` (the embedded tokenizer, `Tokenizer`).
The embedded tokenizer needs no files at all: `load_or_train_tokenizer(workdir)` trains it.
"""

from __future__ import annotations

import os

from r1jax.data.hf_tokenizer import TOKENIZER_FILE, HFTokenizer
from r1jax.data.text_tokenizer import TextTokenizer
from r1jax.data.tokenizer import Tokenizer

# The embedded sentencepiece model's name in a checkpoint directory.
SENTENCEPIECE_FILE = "tokenizer.model"


def load_tokenizer(path: str) -> TextTokenizer:
    """The tokenizer in `path` (a checkpoint directory, its tokenizer.json, or a .model file)."""
    if not path:
        raise ValueError("tokenizer path is empty: give a checkpoint directory holding "
                         f"{TOKENIZER_FILE} or a sentencepiece .model file")
    if os.path.isdir(path):
        spm_model = os.path.join(path, SENTENCEPIECE_FILE)
        if not os.path.exists(os.path.join(path, TOKENIZER_FILE)) and os.path.exists(spm_model):
            return Tokenizer(spm_model)
        return HFTokenizer(path)
    if os.path.basename(path) == TOKENIZER_FILE:
        return HFTokenizer(os.path.dirname(path) or ".")
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer path {path} does not exist: give a checkpoint directory "
                                f"holding {TOKENIZER_FILE} or a sentencepiece .model file")
    return Tokenizer(path)


def vocabulary_difference(a: TextTokenizer, b: TextTokenizer) -> str | None:
    """The first way token ids mean different things in `a` and `b` (size, a special id, a
    piece), or None when they share one vocabulary (their chat templates may differ)."""
    if a.vocab_size != b.vocab_size:
        return f"vocab_size {a.vocab_size} vs {b.vocab_size}"
    for name in ("eos_id", "bos_id", "pad_id", "unk_id"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} {getattr(a, name)} vs {getattr(b, name)}"
    for token_id in range(a.vocab_size):
        pieces = []
        for tok in (a, b):
            try:
                pieces.append(tok.id_to_piece(token_id))
            except (ValueError, IndexError):  # an id a checkpoint's vocabulary skips
                pieces.append(None)
        if pieces[0] != pieces[1]:
            return f"token {token_id} is {pieces[0]!r} vs {pieces[1]!r}"
    return None
