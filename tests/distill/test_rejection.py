"""Rejection sampling: a sampler whose completions the test scripts shows that exactly the correct,
well-formed, readable and distinct samples are kept, with their provenance, and that the JSONL it
writes trains through `file_dataset` + `sft_batches`. One run with the real sampler checks the
wiring to `r1jax.rollout`."""

import json

import jax
import numpy as np
import pytest

from r1jax import config, models
from r1jax.data import chat, file_dataset, sft_batches
from r1jax.distill import rejection
from r1jax.rollout import SamplingConfig
from tests.rollout import scripted

GOOD_5 = " <think> 2 + 3 = 5 </think> <answer> 5 </answer>"
GOOD_8 = " <think> 4 * 2 = 8 </think> <answer> 8 </answer>"
GOOD_8_OTHER = " <think> 2 + 2 + 2 + 2 = 8 </think> <answer> 8 </answer>"
# Completions per prompt, sample by sample, with the verdict the filters must reach.
SCRIPT = {
    "What is 2 + 3?": [
        GOOD_5,                                               # kept
        "<think>2 + 3 = 5</think>   <answer>5</answer>",      # same canonical text: duplicate
        " <think> 2 + 3 = 6 </think> <answer> 6 </answer>",   # wrong answer
        " 2 + 3 = 5 <answer> 5 </answer>",                    # correct, but no <think>
        " <think> два плюс три </think> <answer> 5 </answer>",  # correct, unreadable CoT
    ],
    "What is 4 * 2?": [
        GOOD_8 + " and then some",                            # kept, the tail dropped
        GOOD_8_OTHER,                                         # kept: a different CoT
        " <think> 4 * 2 = 6 </think> <answer> 6 </answer>",   # wrong answer
        " <think> 4 * 2 = 8 </think>",                        # no answer
        GOOD_8_OTHER,                                         # duplicate
    ],
    "What is 9 - 7?": [" <think> 9 - 7 = 3 </think> <answer> 3 </answer>"] * 5,  # all wrong
}
PROBLEMS = [{"prompt": "What is 2 + 3?", "answer": "5", "task": "arithmetic"},
            {"prompt": "What is 4 * 2?", "answer": 8, "task": "arithmetic"},
            {"prompt": "What is 9 - 7?", "answer": "2", "task": "arithmetic"}]
K = 5


@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer


@pytest.fixture()
def scripted_sampler(tok, monkeypatch):
    """Replaces `sample`: each prompt row (found by decoding it) gets SCRIPT's completions."""
    return scripted.install(monkeypatch, tok, SCRIPT)


def run_scripted(tok):
    return rejection.rejection_sample(
        None, None, tok, PROBLEMS, k=K,
        sampling=SamplingConfig(max_new_tokens=48, temperature=0.6, top_p=0.95),
        prompts_per_batch=2, seed=7, teacher_name="tiny-r1")


def test_filters_dedup_and_provenance(tok, scripted_sampler):
    records, stats = run_scripted(tok)
    # Three prompts in batches of two: the last batch is padded, each batch has its own key.
    assert [c["rows"] for c in scripted_sampler] == [2, 2]
    assert not np.array_equal(jax.random.key_data(scripted_sampler[0]["rng"]),
                              jax.random.key_data(scripted_sampler[1]["rng"]))
    assert scripted_sampler[0]["scfg"].temperature == 0.6
    assert scripted_sampler[0]["scfg"].num_samples == K

    assert [(r["prompt"], r["sample_index"]) for r in records] == [
        ("What is 2 + 3?", 0), ("What is 4 * 2?", 0), ("What is 4 * 2?", 1)]
    assert [r["completion"] for r in records] == [GOOD_5, GOOD_8, GOOD_8_OTHER]
    for r in records:
        assert tuple(r) == (*rejection.RECORD_FIELDS, "answer", "task")  # + the problem's fields
        assert r["teacher"] == "tiny-r1" and r["seed"] == 7 and r["task"] == "arithmetic"
    assert GOOD_5 == chat.format_completion("2 + 3 = 5", "5")  # kept text is the SFT format
    assert [r["answer"] for r in records] == ["5", "8", "8"]

    per_prompt = [{k: v for k, v in p.items() if k != "prompt"} for p in stats["per_prompt"]]
    assert per_prompt == [
        dict(sampled=5, correct=4, formatted=4, readable=4, duplicates=1, kept=1),
        dict(sampled=5, correct=3, formatted=4, readable=5, duplicates=1, kept=2),
        dict(sampled=5, correct=0, formatted=5, readable=5, duplicates=0, kept=0)]
    assert (stats["sampled"], stats["kept"], stats["acceptance"]) == (15, 3, 3 / 15)


def test_without_the_format_filter_unformatted_samples_are_kept_verbatim(tok, scripted_sampler):
    records, stats = rejection.rejection_sample(
        None, None, tok, PROBLEMS, k=K, prompts_per_batch=2, seed=7, require_format=False)
    assert [(r["prompt"], r["sample_index"]) for r in records] == [
        ("What is 2 + 3?", 0), ("What is 2 + 3?", 3), ("What is 4 * 2?", 0), ("What is 4 * 2?", 1)]
    # The well-formed ones are still rewritten canonically; the other is kept as sampled.
    assert [r["completion"] for r in records] == [
        GOOD_5, " 2 + 3 = 5 <answer> 5 </answer>", GOOD_8, GOOD_8_OTHER]
    assert stats["kept"] == 4


def test_written_jsonl_trains_through_sft_batches(tok, scripted_sampler, tmp_path):
    records, _ = run_scripted(tok)
    path = str(tmp_path / "sft" / "distill.jsonl")
    assert rejection.write_sft_jsonl(records, path) == 3
    assert [json.loads(line) for line in open(path, encoding="utf-8")] == records

    batch = next(iter(sft_batches(file_dataset(path), tok, seq_len=96, batch_size=3, num_epochs=1)))
    assert batch["inputs"].shape == (3, 96)
    # The loss covers exactly the teacher's completion and its eos: what the student learns.
    learned = []
    for targets, mask in zip(batch["targets"], batch["loss_mask"]):
        assert targets[mask][-1] == tok.eos_id
        learned.append(tok.decode(targets[mask][:-1]))
    assert sorted(learned) == sorted(r["completion"] for r in records)


def test_write_refuses_what_file_dataset_cannot_read(tmp_path):
    with pytest.raises(ValueError, match=r"\.jsonl"):
        rejection.write_sft_jsonl([], str(tmp_path / "out.json"))
    with pytest.raises(ValueError, match="completion"):
        rejection.write_sft_jsonl([{"prompt": "p"}], str(tmp_path / "out.jsonl"))


def test_real_sampler_wiring(tok):
    """A random tiny teacher: every sample is drawn, decoded and judged; none is correct."""
    cfg = config.tiny(num_layers=1, hidden_size=32, num_mtp_modules=0)
    params = models.init(cfg, jax.random.key(0))
    records, stats = rejection.rejection_sample(
        cfg, params, tok, PROBLEMS[:2], k=2, sampling=SamplingConfig(max_new_tokens=4),
        prompts_per_batch=2, seed=0)
    assert records == [] and stats["sampled"] == 4
    assert [p["correct"] for p in stats["per_prompt"]] == [0, 0]
    kept, stats = rejection.rejection_sample(
        cfg, params, tok, PROBLEMS[:2], k=2, sampling=SamplingConfig(max_new_tokens=4),
        prompts_per_batch=2, seed=0, require_correct=False, require_format=False,
        min_language_consistency=0.0)
    assert stats["sampled"] == 4 and 1 <= len(kept) <= 4  # everything but exact repeats
    assert all(isinstance(r["completion"], str) and r["sample_index"] in (0, 1) for r in kept)
