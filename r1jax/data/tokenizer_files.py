"""`load_tokenizer(path)`: the tokenizer a path holds, whichever implementation reads it.

- a directory: a Hugging Face checkpoint (`tokenizer.json`, `tokenizer_config.json`,
  `chat_template.jinja`), read by `HFTokenizer`;
- a `tokenizer.json` file: its directory, as above;
- any other file: a sentencepiece `.model` (the embedded tokenizer, `Tokenizer`).
The embedded tokenizer needs no files at all: `load_or_train_tokenizer(workdir)` trains it.
"""

from __future__ import annotations

import os

from r1jax.data.hf_tokenizer import TOKENIZER_FILE, HFTokenizer
from r1jax.data.text_tokenizer import TextTokenizer
from r1jax.data.tokenizer import Tokenizer


def load_tokenizer(path: str) -> TextTokenizer:
    """The tokenizer in `path` (a checkpoint directory, its tokenizer.json, or a .model file)."""
    if not path:
        raise ValueError("tokenizer path is empty: give a checkpoint directory holding "
                         f"{TOKENIZER_FILE} or a sentencepiece .model file")
    if os.path.isdir(path):
        return HFTokenizer(path)
    if os.path.basename(path) == TOKENIZER_FILE:
        return HFTokenizer(os.path.dirname(path) or ".")
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer path {path} does not exist: give a checkpoint directory "
                                f"holding {TOKENIZER_FILE} or a sentencepiece .model file")
    return Tokenizer(path)
