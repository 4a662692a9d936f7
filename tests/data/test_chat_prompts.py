"""Prompts and SFT rows in the tokenizer's format (r1jax/data/chat_prompts.py).

The embedded tokenizer keeps the embedded R1-Zero format token for token (the ids are written out
here from the format, as the pipelines built them before chat templates); a checkpoint's tokenizer
with a chat template gives exactly the ids of `transformers.AutoTokenizer.apply_chat_template(...,
add_generation_prompt=True)`, on the Qwen2.5- and DeepSeek-R1-shaped tokenizers of
tokenizer_builders.py.
"""

import json

import numpy as np
import pytest

from r1jax.data import HFTokenizer, chat, heldout_problems
from r1jax.data.chat_prompts import (completion_text, opened_by_template, prompt_ids,
                                     uses_chat_template, user_message)
from r1jax.data.pipeline import rl_prompt_features, sft_features
from r1jax.rollout import prompt_batches
from r1jax.rollout.prompts import decode_completions
from r1jax.rollout.scoring import has_r1_format
from tests.data import tokenizer_builders as builders

PROBLEMS = heldout_problems("arithmetic", num_problems=6, max_digits=2) + heldout_problems(
    "countdown", num_problems=2)


@pytest.fixture(scope="module", params=["qwen", "r1"])
def checkpoint(request, tmp_path_factory):
    """(name, our tokenizer, the reference) of one checkpoint directory."""
    return builders.ours_and_reference(request.param, tmp_path_factory.mktemp(request.param))


def test_embedded_tokenizer_keeps_the_embedded_ids(tokenizer):
    assert not uses_chat_template(tokenizer)
    for ex in PROBLEMS:
        expected = [tokenizer.bos_id, *tokenizer.encode(chat.format_prompt(ex))]
        row = rl_prompt_features(tokenizer, ex, max_prompt_len=96)
        assert row["prompt_tokens"][row["prompt_mask"]].tolist() == expected
        sft = sft_features(tokenizer, ex, seq_len=128)
        completion = tokenizer.encode(chat.completion_of(ex))
        ids = expected + completion + [tokenizer.eos_id]
        n = len(ids) - 1
        assert sft["inputs"][:n].tolist() == ids[:-1] and sft["targets"][:n].tolist() == ids[1:]
        assert np.flatnonzero(sft["loss_mask"]).tolist() == list(range(len(expected) - 1, n))
    assert decode_completions(tokenizer, np.asarray([completion]), np.asarray([len(completion)])
                              ) == [tokenizer.decode(completion)]


def test_checkpoint_without_template_keeps_the_embedded_format(tmp_path):
    directory = builders.build_qwen_style(tmp_path / "q")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    tok = HFTokenizer(str(directory))
    assert not uses_chat_template(tok)
    assert prompt_ids(tok, PROBLEMS[0]) == tok.encode(chat.format_prompt(PROBLEMS[0]))  # no bos
    assert completion_text(tok, PROBLEMS[0]) == chat.completion_of(PROBLEMS[0])


def test_prompts_are_the_reference_chat_template_ids(checkpoint):
    name, ours, ref = checkpoint
    assert uses_chat_template(ours)
    for ex in PROBLEMS:
        expected = ref.apply_chat_template([user_message(ex)], add_generation_prompt=True)["input_ids"]
        row = rl_prompt_features(ours, ex, max_prompt_len=160)
        assert row["prompt_tokens"][row["prompt_mask"]].tolist() == expected
        assert ex["prompt"] in ref.decode(expected) and chat.SHORT_SYSTEM in ref.decode(expected)
    # Guard: not the embedded format, and bos exactly once where the template writes it.
    assert expected != [*([ours.bos_id] if ours.bos_id is not None else []),
                        *ours.encode(chat.format_prompt(ex))]
    assert expected.count(ours.bos_id) == (1 if name == "r1" else 0)
    batch, real = next(prompt_batches(ours, PROBLEMS[:2], batch_size=4, max_prompt_len=160))
    assert real == 2 and batch["prompt_mask"].sum(1).tolist()[:2] == [
        len(ref.apply_chat_template([user_message(ex)], add_generation_prompt=True)["input_ids"])
        for ex in PROBLEMS[:2]]


def test_sft_rows_follow_the_prompt_with_the_completion(checkpoint):
    name, ours, ref = checkpoint
    ex = PROBLEMS[0]
    prompt = ref.apply_chat_template([user_message(ex)], add_generation_prompt=True)["input_ids"]
    target = completion_text(ours, ex)
    ids = prompt + ours.encode(target) + [ours.eos_id]
    row = sft_features(ours, ex, seq_len=160)
    n = len(ids) - 1
    assert row["inputs"][:n].tolist() == ids[:-1] and row["targets"][:n].tolist() == ids[1:]
    assert np.flatnonzero(row["loss_mask"]).tolist() == list(range(len(prompt) - 1, n))
    # The completion starts right after the generation prompt: no leading space, and no second
    # <think> where the template opened it.
    opened = opened_by_template(ours)
    assert opened == ("<think>\n" if name == "r1" else "")
    assert target.startswith("<think>") == (name == "qwen") and not target.startswith(" ")
    assert has_r1_format(opened + target)


def test_sampled_completion_is_scored_whole(checkpoint):
    """A model that continues R1's opened <think> writes no <think>: decoding restores it, so the
    format reward sees all four tags."""
    name, ours, _ = checkpoint
    written = ours.encode(completion_text(ours, PROBLEMS[0]))
    text, = decode_completions(ours, np.asarray([written + [ours.eos_id]]),
                               np.asarray([len(written) + 1]))
    assert has_r1_format(text) and text.startswith("<think>")
