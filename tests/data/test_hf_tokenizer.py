"""HFTokenizer against the reference, `transformers.AutoTokenizer`, on locally built tokenizers in
the shape of Qwen2.5 and DeepSeek-R1 (tests/data/tokenizer_builders.py): the same ids with and
without special tokens, the same decoded text, the same special ids and the same chat text, on
1,200 strings (unicode, CJK, emoji, digits, LaTeX, code, whitespace runs, newlines, tags).

Exact equality everywhere: a token or a character of difference is a prompt the model never saw.
Guards check that each comparison can fail (bos is really added, decoding really drops special
tokens, the R1 template really opens <think>).
"""

import unicodedata

import numpy as np
import pytest

from r1jax.data import HFTokenizer, TextTokenizer, load_tokenizer
from r1jax.data.pipeline import rl_prompt_features, sft_features
from r1jax.rollout.prompts import decode_completions
from tests.data import tokenizer_builders as builders

STRINGS = builders.varied_strings(1200)
TOOLS = [{"type": "function", "function": {
    "name": "calc", "description": "Evaluates <expr> & returns 'x' — ünïcode 中文",
    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}}}]


@pytest.fixture(scope="module", params=["qwen", "r1"])
def pair(request, tmp_path_factory):
    """(ours, the reference) loaded from the same directory."""
    return builders.ours_and_reference(request.param, tmp_path_factory.mktemp(request.param))


def _mismatches(pairs):
    """The first few (input, ours, reference) that differ, and how many."""
    bad = [(x, a, b) for x, a, b in pairs if a != b]
    return len(bad), bad[:3]


def test_is_a_text_tokenizer_with_the_reference_special_ids(pair):
    name, ours, ref = pair
    assert isinstance(ours, TextTokenizer)
    assert (ours.bos_id, ours.eos_id, ours.unk_id) == (ref.bos_token_id, ref.eos_token_id, ref.unk_token_id)
    assert ours.pad_id == ref.pad_token_id
    assert ours.vocab_size == len(ref)
    assert ours.eos_id is not None and (ours.bos_id is None) == (name == "qwen")


def test_encode_matches_transformers(pair):
    name, ours, ref = pair
    assert _mismatches((s, ours.encode(s), ref.encode(s, add_special_tokens=False)) for s in STRINGS) == (0, [])
    assert _mismatches((s, ours.encode(s, add_special_tokens=True), ref.encode(s)) for s in STRINGS) == (0, [])
    # Guard: the R1 checkpoint's post-processor adds bos; ids are not all single bytes.
    assert (ours.encode("hi", add_special_tokens=True)[0] == ours.bos_id) == (name == "r1")
    assert sum(map(len, map(ours.encode, STRINGS))) < sum(len(s.encode()) for s in STRINGS) * 0.8


def test_decode_matches_transformers(pair):
    _, ours, ref = pair
    ids = [ref.encode(s) + [ref.eos_token_id] for s in STRINGS]
    for skip in (True, False):
        assert _mismatches((i, ours.decode(i, skip_special_tokens=skip),
                            ref.decode(i, skip_special_tokens=skip)) for i in ids) == (0, [])
    # Guard: the default drops eos (and bos), keeping the text.
    assert ours.decode(ids[1]) != ours.decode(ids[1], skip_special_tokens=False)


def test_decode_round_trip(pair):
    name, ours, _ = pair
    # Qwen normalizes to NFC first ("e\u0301" comes back as "é"); R1 has no normalizer. Special
    # tokens written in the text are kept here (the default decode drops them).
    expected = [unicodedata.normalize("NFC", s) if name == "qwen" else s for s in STRINGS]
    assert _mismatches((s, ours.decode(ours.encode(s), skip_special_tokens=False), e)
                       for s, e in zip(STRINGS, expected)) == (0, [])
    if name == "qwen":
        assert expected != STRINGS  # guard: NFC changed some strings


@pytest.mark.parametrize("max_tokens", [1, 5, 17, 64])
def test_encode_prefix_is_a_prefix_of_encode(pair, max_tokens):
    _, ours, _ = pair
    texts = [" ".join(STRINGS[i:i + 40]) for i in range(0, len(STRINGS), 40)]
    assert _mismatches((t, ours.encode_prefix(t, max_tokens), ours.encode(t)[:max_tokens])
                       for t in texts) == (0, [])


def test_chat_template_matches_transformers(pair):
    name, ours, ref = pair
    chats = builders.conversations(STRINGS)
    assert len(chats) >= 1000 and {c["add_generation_prompt"] for c in chats} == {True, False}
    rendered = [(c, ours.apply_chat_template(c["messages"], add_generation_prompt=c["add_generation_prompt"]),
                 ref.apply_chat_template(c["messages"], add_generation_prompt=c["add_generation_prompt"],
                                         tokenize=False)) for c in chats]
    assert _mismatches(rendered) == (0, [])


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_generation_prompt_opens_the_assistant_turn(pair, add_generation_prompt):
    name, ours, ref = pair
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    text = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert text == ref.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    opening = {"qwen": "<|im_start|>assistant\n", "r1": "<｜Assistant｜><think>\n"}[name]
    assert text.endswith(opening) == add_generation_prompt


def test_tools_render_with_transformers_tojson(pair):
    name, ours, ref = pair
    messages = [{"role": "user", "content": "2+2?"}]
    text = ours.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True)
    assert text == ref.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    # Qwen's template lists the tools through tojson (not HTML-escaped, not \u-escaped); R1's has
    # no tools section.
    assert ("<expr> & returns 'x' — ünïcode 中文" in text) == (name == "qwen")


def test_load_tokenizer_reads_a_checkpoint_directory_or_its_tokenizer_json(pair):
    _, ours, _ = pair
    for path in (ours.path, f"{ours.path}/tokenizer.json"):
        loaded = load_tokenizer(path)
        assert isinstance(loaded, HFTokenizer) and loaded.encode(STRINGS[100]) == ours.encode(STRINGS[100])


def test_pipelines_take_a_checkpoint_tokenizer(pair):
    name, ours, _ = pair
    example = {"prompt": "Compute 12+30.", "answer": "42", "reasoning": "12+30=42"}
    # Rows of 160: prompts are rendered with the checkpoint's chat template, and Qwen's adds its
    # default system prompt.
    row = sft_features(ours, example, seq_len=160)
    first = int(row["inputs"][0])
    assert (first == ours.bos_id) == (name == "r1")  # bos only where the tokenizer has one
    assert row["loss_mask"].any() and ours.eos_id in row["targets"][row["loss_mask"]]
    prompt = rl_prompt_features(ours, example, max_prompt_len=160)
    assert prompt["prompt_mask"].sum() == prompt["prompt_lengths"]
    # Sampled ids past the vocabulary (a padded embedding table) are dropped, not decoded as unk.
    ids = ours.encode(" <answer> 42 </answer>")
    tokens = np.asarray([ids + [ours.vocab_size + 5, ours.eos_id]])
    # R1's template opens <think> in the generation prompt: decoding puts it back in front.
    opened = "<think>\n" if name == "r1" else ""
    assert decode_completions(ours, tokens, np.asarray([len(ids) + 2])) == [f"{opened} <answer> 42 </answer>"]
