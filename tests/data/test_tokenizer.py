"""The sentencepiece tokenizer: ids, exact round trips, single-piece tags, caching, lengths."""

import os
import time

import numpy as np
import pytest

from r1jax.data import chat, corpus, tokenizer as tokenizer_lib


def test_special_ids_and_vocab(tokenizer):
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 2, 3)
    assert 300 <= tokenizer.vocab_size <= tokenizer_lib.DEFAULT_VOCAB_SIZE


@pytest.mark.parametrize("tag", [*chat.TAGS, "\n"])
def test_tags_are_single_pieces_everywhere(tokenizer, tag):
    (tag_id,) = tokenizer.encode(tag)
    assert tokenizer.id_to_piece(tag_id) == tag
    for text in (f"x{tag}y", f" {tag} ", f"12{tag}34"):
        assert tokenizer.encode(text).count(tag_id) == 1


@pytest.mark.parametrize("text", [
    "Think in <think> </think>, then answer in <answer> </answer>.\nUser: Compute 12+9.\nAssistant:",
    "  two  spaces, trailing space ",
    "unicode: é ß 中文 😀 and tabs\tand\r\n",
    "<think> 9+9+0=18 </think> <answer> 18 </answer>",
    "",
])
def test_decode_encode_is_exact(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.unk_id not in ids  # byte fallback covers any character
    assert tokenizer.decode(ids) == text


def test_digits_are_single_pieces(tokenizer):
    ids = tokenizer.encode("1234567890")
    assert len(ids) == 10


def test_bos_eos_pad_are_dropped_by_decode(tokenizer):
    ids = [tokenizer.bos_id, *tokenizer.encode("hi"), tokenizer.eos_id, tokenizer.pad_id]
    assert tokenizer.decode(ids) == "hi"


def test_cached_model_is_reused_not_retrained(tokenizer, tokenizer_workdir):
    path = tokenizer.model_path
    assert os.path.dirname(path) == tokenizer_workdir
    mtime = os.path.getmtime(path)
    again = tokenizer_lib.load_or_train_tokenizer(tokenizer_workdir)
    assert again.model_path == path and os.path.getmtime(path) == mtime
    loaded = tokenizer_lib.load_or_train_tokenizer(model_path=path)
    assert loaded.encode("Compute 3+4.") == tokenizer.encode("Compute 3+4.")


def test_training_is_fast(tmp_path):
    start = time.perf_counter()
    tokenizer_lib.load_or_train_tokenizer(str(tmp_path), vocab_size=384)
    assert time.perf_counter() - start < 10


def test_default_task_documents_fit_128_tokens(tokenizer):
    lengths = [len(tokenizer.encode(doc)) + 2 for doc in corpus.pretraining_documents(11, 400)]  # + bos, eos
    assert max(lengths) <= 128, f"longest document {max(lengths)} tokens"
    assert np.mean(lengths) < 100


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_or_train_tokenizer"):
        tokenizer_lib.Tokenizer(str(tmp_path / "missing.model"))
    with pytest.raises(ValueError, match="vocab_size=100 must be >="):
        tokenizer_lib.train_tokenizer(str(tmp_path / "t.model"), ["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="workdir"):
        tokenizer_lib.load_or_train_tokenizer()
