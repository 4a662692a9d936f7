"""A sentencepiece tokenizer trained on the embedded corpus, cached in a work directory.

Choices, and why:
- ids: pad=0 (so zero-filled batches are padding), unk=1, bos=2, eos=3.
- The four R1 tags and "\n" are user-defined symbols: always exactly one piece, so the format
  reward's structure is visible to the model as single tokens and never split across pieces.
- `split_digits`: every digit is its own piece, so a column of the addition scratchpad is the
  same tokens wherever it appears (numbers are not memorised as chunks).
- `byte_fallback` + identity normalisation: any text encodes, and decode(encode(s)) == s exactly
  (no NFKC rewriting, no whitespace collapsing), which the SFT loss mask and the rewards rely on.
"""

import io
import os
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import sentencepiece as spm

from r1jax.data import chat, corpus
from r1jax.data.chat_template import ChatTemplate
from r1jax.data.text_tokenizer import TextTokenizer

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
USER_DEFINED_SYMBOLS = (*chat.TAGS, "\n")
DEFAULT_VOCAB_SIZE = 512
_BYTE_PIECES = 256  # byte_fallback reserves one piece per byte value
_EMBEDDED_TEMPLATE = ChatTemplate(chat.R1_ZERO_CHAT_TEMPLATE, origin="r1jax.data.chat.R1_ZERO_CHAT_TEMPLATE")


class Tokenizer(TextTokenizer):
    """Thin wrapper over a SentencePieceProcessor with the ids above; its chat template is the
    embedded R1-Zero one (`chat.R1_ZERO_CHAT_TEMPLATE`)."""

    def __init__(self, model_path: str):
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"tokenizer model {model_path} does not exist; "
                                    "build one with load_or_train_tokenizer(workdir)")
        self.model_path = model_path
        self._sp = spm.SentencePieceProcessor(model_file=model_path)
        ids = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id())
        if ids != (PAD_ID, BOS_ID, EOS_ID):
            raise ValueError(f"{model_path} has (pad, bos, eos) ids {ids}; r1jax expects "
                             f"{(PAD_ID, BOS_ID, EOS_ID)}: retrain with train_tokenizer")

    @property
    def path(self) -> str:
        return self.model_path

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without bos/eos (callers add them where a document starts/ends)."""
        return self._sp.encode(text, out_type=int)

    def _piece_lengths(self) -> Iterable[int]:
        # Byte and control pieces count their spelling: an overstatement, which only makes a
        # cut longer.
        return (len(self._sp.id_to_piece(i)) for i in range(self.vocab_size))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; pad, bos and eos are dropped (sentencepiece skips control ids)."""
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = False, **template_kwargs) -> str:
        return _EMBEDDED_TEMPLATE.render(messages, add_generation_prompt=add_generation_prompt,
                                         **template_kwargs)


def train_tokenizer(model_path: str, texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> None:
    """Trains a BPE model on `texts` and writes it atomically to `model_path`.

    BPE rather than unigram: on this small, repetitive corpus BPE merges the template's words
    ("Assistant", "▁then▁answer▁in") into single pieces, while unigram kept mostly single
    characters, which made documents ~1.5x longer.
    """
    minimum = _BYTE_PIECES + 4 + len(USER_DEFINED_SYMBOLS) + 1
    if vocab_size < minimum:
        raise ValueError(f"vocab_size={vocab_size} must be >= {minimum} (256 byte pieces, "
                         "4 special ids and the tag symbols come first)")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, user_defined_symbols=list(USER_DEFINED_SYMBOLS),
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        # split_by_whitespace=False lets frequent phrases become one piece; hard_vocab_limit=False
        # lets a small corpus yield a smaller vocabulary instead of failing.
        split_by_whitespace=False, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    directory = os.path.dirname(os.path.abspath(model_path))
    os.makedirs(directory, exist_ok=True)
    # Write-then-rename: several processes may build the same cached model at once.
    fd, tmp_path = tempfile.mkstemp(dir=directory, suffix=".model.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp_path, model_path)


def load_or_train_tokenizer(
    workdir: str | None = None, *, model_path: str | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE,
    seed: int = 0, num_documents: int = 4000,
) -> Tokenizer:
    """Loads `model_path` if given; else reuses or trains `workdir/tokenizer_v{vocab_size}_s{seed}.model`.

    Training on `num_documents` corpus documents of stream `seed` takes a few seconds on CPU.
    """
    if model_path is not None:
        return Tokenizer(model_path)
    if workdir is None:
        raise ValueError("give workdir (where the trained model is cached) or model_path")
    cached = os.path.join(workdir, f"tokenizer_v{vocab_size}_s{seed}.model")
    if not os.path.exists(cached):
        train_tokenizer(cached, corpus.pretraining_documents(seed, num_documents), vocab_size)
    return Tokenizer(cached)
