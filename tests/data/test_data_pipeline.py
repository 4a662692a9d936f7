"""grain pipelines: packed pretraining rows, padded SFT rows, RL prompt batches, resumption."""

import grain
import numpy as np
import pytest

from r1jax.data import chat, pipeline, sources
from r1jax.data.tasks import countdown
from r1jax.rollout.scoring import has_r1_format

L, B = 128, 4


def _assert_token_batch(batch, rows=B, seq_len=L):
    assert set(batch) == set(pipeline.TOKEN_KEYS)
    for key in pipeline.TOKEN_KEYS:
        assert batch[key].shape == (rows, seq_len), key
    for key in ("inputs", "targets", "segment_ids", "positions"):
        assert batch[key].dtype == np.int32, key
    assert batch["loss_mask"].dtype == bool
    padding = batch["segment_ids"] == 0
    assert not (batch["loss_mask"] & padding).any()
    assert (batch["inputs"][padding] == 0).all()


def _documents_of_row(batch, row):
    """(inputs, targets, positions) of each document in one packed row."""
    segments = batch["segment_ids"][row]
    return [(batch["inputs"][row][segments == s], batch["targets"][row][segments == s],
             batch["positions"][row][segments == s]) for s in np.unique(segments[segments > 0])]


def test_packed_rows_hold_whole_documents(tokenizer):
    ds = pipeline.pretraining_batches(sources.corpus_dataset(seed=0), tokenizer, seq_len=L, batch_size=B)
    batches = pipeline.first_batches(ds, 3)
    for batch in batches:
        _assert_token_batch(batch)
        assert (batch["loss_mask"] == (batch["segment_ids"] > 0)).all()  # pretraining: every real token
        for row in range(B):
            documents = _documents_of_row(batch, row)
            assert len(documents) >= 1
            for inputs, targets, positions in documents:
                assert inputs[0] == tokenizer.bos_id and targets[-1] == tokenizer.eos_id
                np.testing.assert_array_equal(inputs[1:], targets[:-1])  # next-token shift
                np.testing.assert_array_equal(positions, np.arange(len(inputs)))
                text = tokenizer.decode(inputs)
                assert text.startswith(chat.SHORT_SYSTEM) and text.endswith("</answer>")
    # Two documents per 128-token row on average: packing is doing its job.
    assert np.mean([batch["segment_ids"].max(axis=1).mean() for batch in batches]) > 1.3


def test_sft_loss_mask_covers_exactly_the_completion(tokenizer):
    examples = sources.task_dataset("countdown", seed=1)
    ds = pipeline.sft_batches(examples, tokenizer, seq_len=L, batch_size=B, seed=3)
    batch = pipeline.first_batches(ds, 1)[0]
    _assert_token_batch(batch)
    assert set(np.unique(batch["segment_ids"])) <= {0, 1}
    for row in range(B):
        mask = batch["loss_mask"][row]
        completion_text = tokenizer.decode(batch["targets"][row][mask])
        assert completion_text.startswith(" <think>") and completion_text.endswith("</answer>")
        assert batch["targets"][row][mask][-1] == tokenizer.eos_id
        assert has_r1_format(completion_text)
        prompt_text = tokenizer.decode(batch["inputs"][row][: np.argmax(mask) + 1])
        assert prompt_text.endswith("Assistant:") and "<think>" not in prompt_text.split("Assistant:")[-1]


def test_sft_features_truncate_long_examples(tokenizer):
    example = {"prompt": "Compute 1+1.", "completion": " <think> " + "1+1 " * 100 + "</think>"}
    row = pipeline.sft_features(tokenizer, example, seq_len=32)
    assert row["inputs"].shape == (32,) and row["segment_ids"].all() and row["loss_mask"].any()


@pytest.mark.parametrize("pad_side", ["left", "right"])
def test_rl_prompt_batches_keep_reward_fields(tokenizer, pad_side):
    examples = sources.task_dataset("countdown", seed=2, split="heldout")
    ds = pipeline.rl_prompt_batches(examples, tokenizer, max_prompt_len=48, batch_size=B, pad_side=pad_side)
    batch = pipeline.first_batches(ds, 1)[0]
    assert batch["prompt_tokens"].shape == batch["prompt_mask"].shape == (B, 48)
    assert batch["prompt_tokens"].dtype == np.int32 and batch["prompt_mask"].dtype == bool
    assert (batch["prompt_lengths"] == batch["prompt_mask"].sum(axis=1)).all()
    edge = -1 if pad_side == "left" else 0
    assert batch["prompt_mask"][:, edge].all()  # left padding: every prompt ends in the last column
    examples = batch["examples"]
    assert examples.shape == (B,) and examples.dtype == object
    assert all({"prompt", "answer", "numbers", "target"} <= set(ex) for ex in examples)
    assert isinstance(examples[0]["numbers"], list)
    for row in range(B):
        text = tokenizer.decode(batch["prompt_tokens"][row][batch["prompt_mask"][row]])
        assert text == chat.format_prompt({"prompt": examples[row]["prompt"]})
    perfect = [chat.format_completion("", ex["answer"]) for ex in examples]
    assert all(countdown.verify(c, ex) for c, ex in zip(perfect, examples))


def test_rl_prompt_longer_than_limit_is_refused(tokenizer):
    ds = pipeline.rl_prompt_batches(sources.task_dataset("countdown", seed=0), tokenizer,
                                    max_prompt_len=8, batch_size=2)
    with pytest.raises(ValueError, match="max_prompt_len=8"):
        pipeline.first_batches(ds, 1)


@pytest.mark.parametrize("make", ["pretraining", "sft", "rl"])
def test_resumed_iterator_gives_identical_batches(tokenizer, make):
    examples = sources.corpus_dataset(seed=4)

    def build(seed):
        if make == "pretraining":
            return pipeline.pretraining_batches(examples, tokenizer, seq_len=L, batch_size=B, seed=seed)
        if make == "sft":
            return pipeline.sft_batches(examples, tokenizer, seq_len=L, batch_size=B, seed=seed)
        return pipeline.rl_prompt_batches(examples, tokenizer, max_prompt_len=64, batch_size=B, seed=seed)

    iterator = iter(build(9))
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]
    resumed = iter(build(9))  # a fresh pipeline, as after a restart
    resumed.set_state(state)
    for want, got in zip(expected, [next(resumed) for _ in range(4)]):
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(want[key], got[key], err_msg=key)
    key = "prompt_tokens" if make == "rl" else "inputs"
    assert not np.array_equal(next(iter(build(10)))[key], next(iter(build(9)))[key])  # seed matters


def test_shards_split_the_global_batch_disjointly(tokenizer):
    examples = grain.MapDataset.source([{"prompt": f"Compute {i}+0.", "answer": str(i)} for i in range(64)])
    shards = [pipeline.first_batches(pipeline.rl_prompt_batches(
        examples, tokenizer, max_prompt_len=48, batch_size=8, num_shards=2, shard_index=i, num_epochs=1), 8)
        for i in range(2)]
    assert all(batch["prompt_tokens"].shape == (4, 48) for shard in shards for batch in shard)
    answers = [[ex["answer"] for batch in shard for ex in batch["examples"]] for shard in shards]
    assert not set(answers[0]) & set(answers[1])
    assert sorted(answers[0] + answers[1], key=int) == [str(i) for i in range(64)]
    with pytest.raises(ValueError, match="batch_size=6 must be divisible by num_shards=4"):
        pipeline.sft_batches(examples, tokenizer, seq_len=L, batch_size=6, num_shards=4)
    with pytest.raises(ValueError, match="shard_index=2"):
        pipeline.sft_batches(examples, tokenizer, seq_len=L, batch_size=4, num_shards=2, shard_index=2)


def test_epochs_end_and_are_reshuffled(tokenizer):
    examples = sources.task_dataset("arithmetic", seed=0, num_examples=8)
    ds = pipeline.rl_prompt_batches(examples, tokenizer, max_prompt_len=48, batch_size=8, num_epochs=2)
    batches = list(ds)
    assert len(batches) == 2
    prompts = [[ex["prompt"] for ex in batch["examples"]] for batch in batches]
    assert sorted(prompts[0]) == sorted(prompts[1])
    assert prompts[0] != prompts[1]
