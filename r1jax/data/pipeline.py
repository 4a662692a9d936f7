"""grain input pipelines: packed pretraining, padded SFT, and RL prompt batches.

All three take a MapDataset of examples (see `sources.py`) and return a grain IterDataset of
batches. `it = iter(dataset)` is a grain DatasetIterator: `it.get_state()` returns a small dict
and `it.set_state(state)` on a fresh iterator of the same dataset resumes with identical batches.

Token batches (pretraining and SFT share them, so one train step consumes both):
    inputs       (B, L) int32  tokens fed to the model (bos first, 0 = padding)
    targets      (B, L) int32  next tokens: targets[:, t] == inputs[:, t+1] within a document
    loss_mask    (B, L) bool   positions that count in the loss (pretraining: every real token;
                               SFT: completion tokens only, the prompt is masked out)
    segment_ids  (B, L) int32  document number in the row, from 1; 0 = padding. Attention must
                               stay within equal, nonzero segment ids.
    positions    (B, L) int32  position within the document (restarts at 0 for each document)
RL prompt batches:
    prompt_tokens   (B, P) int32  bos (if the tokenizer has one) + templated prompt, padded with
                                  0 on `pad_side`
    prompt_mask     (B, P) bool   True on real prompt tokens
    prompt_lengths  (B,)   int32
    examples        (B,)   object  each row's example dict, untouched (`prompt`, `answer`, `task`,
                                   `numbers`, ...): what the task's verifier reads
B is the per-process batch: batch_size // num_shards.

Long texts: only what can fit is tokenized (`TextTokenizer.encode_prefix`): a row takes seq_len + 1
tokens at most, so a 10 MB document costs what its first seq_len tokens cost, and the rows are
exactly those of the whole text cut after tokenizing.

SFT rows without a trainable token: when bos + prompt take more than seq_len tokens no completion
token fits and the row's loss mask is empty (the step would fit the balance term alone).
`sft_batches` skips such rows rather than refusing the data set: a few overlong prompts in a
user's file should not stop a run, but they must not pass unnoticed either. The first batch
after a skip warns once with the count and the first such prompt; `SkippedRows.count` keeps
counting (pass your own `skipped=SkippedRows()` to read it); and a whole batch's worth of such
rows in a row raises, since then seq_len is too small for the data (a config mistake).
"""

import dataclasses
import functools
import warnings
from typing import Sequence

import grain
import numpy as np

from r1jax.data import chat, chat_prompts
from r1jax.data.text_tokenizer import TextTokenizer

TOKEN_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")
_PACKED = ("inputs", "targets", "loss_mask")


def _per_shard_batch_size(batch_size: int, num_shards: int, shard_index: int) -> int:
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
    if batch_size % num_shards:
        raise ValueError(f"batch_size={batch_size} must be divisible by num_shards={num_shards} "
                         "(each process loads batch_size // num_shards rows)")
    return batch_size // num_shards


def _ordered(examples: grain.MapDataset, *, seed: int, num_epochs: int | None, num_shards: int,
             shard_index: int) -> grain.MapDataset:
    """Disjoint shard per process, then a seeded shuffle that changes every epoch."""
    return examples[shard_index::num_shards].shuffle(seed=seed).repeat(num_epochs)


def _stack_batch(rows: Sequence[dict]) -> dict:
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _bos(tokenizer: TextTokenizer) -> list[int]:
    """What a document starts with: bos, or nothing for tokenizers without one (Qwen2.5)."""
    return [] if tokenizer.bos_id is None else [tokenizer.bos_id]


def _document_features(tokenizer: TextTokenizer, text: str, seq_len: int) -> dict:
    # A row holds seq_len + 1 ids: only the text's first seq_len tokens are ever tokenized.
    ids = [*_bos(tokenizer), *tokenizer.encode_prefix(text, seq_len), tokenizer.eos_id]
    ids = ids[: seq_len + 1]
    return {"inputs": np.asarray(ids[:-1], np.int32), "targets": np.asarray(ids[1:], np.int32),
            "loss_mask": np.ones(len(ids) - 1, np.int32)}


def _from_packed(packed: dict) -> dict:
    return {"inputs": packed["inputs"], "targets": packed["targets"],
            "loss_mask": packed["loss_mask"].astype(bool),
            "segment_ids": packed["inputs_segment_ids"].astype(np.int32),
            "positions": packed["inputs_positions"].astype(np.int32)}


def pretraining_batches(
    examples: grain.MapDataset, tokenizer: TextTokenizer, *, seq_len: int, batch_size: int, seed: int = 0,
    num_epochs: int | None = None, num_shards: int = 1, shard_index: int = 0,
    num_packing_bins: int | None = None, system: str = chat.SHORT_SYSTEM,
) -> grain.IterDataset:
    """Whole worked examples (`chat.format_example`) packed into rows of `seq_len` tokens.

    First-fit packing never splits a document (one longer than seq_len + 1 tokens is cut), so
    each row holds whole documents and trailing padding (loss_mask False, segment_ids 0).
    """
    rows = _per_shard_batch_size(batch_size, num_shards, shard_index)
    ds = _ordered(examples, seed=seed, num_epochs=num_epochs, num_shards=num_shards, shard_index=shard_index)
    ds = ds.map(lambda ex: _document_features(tokenizer, chat.format_example(ex, system), seq_len))
    ds = grain.experimental.FirstFitPackIterDataset(
        ds.to_iter_dataset(), length_struct={key: seq_len for key in _PACKED},
        num_packing_bins=num_packing_bins or rows, shuffle_bins=False)
    return ds.map(_from_packed).batch(rows, drop_remainder=True, batch_fn=_stack_batch)


def sft_features(tokenizer: TextTokenizer, example: dict, seq_len: int, system: str = chat.SHORT_SYSTEM) -> dict:
    """One padded SFT row: the loss covers the completion and its eos, never the prompt.

    Prompt and completion are tokenized separately, as at sampling time (the model continues
    the prompt's tokens), in the tokenizer's format (r1jax/data/chat_prompts.py: a checkpoint's
    chat template, or the embedded format). A row longer than seq_len + 1 tokens loses the end
    of its completion; one whose bos + prompt take more than seq_len tokens has an empty loss
    mask (`sft_batches` skips it).
    """
    completion = chat_prompts.completion_text(tokenizer, example)
    # The row holds seq_len + 1 ids: only those are tokenized, the rest of either text never is.
    prompt_ids = chat_prompts.prompt_ids(tokenizer, example, system, max_tokens=seq_len)
    room = seq_len + 1 - len(prompt_ids)
    completion_ids = [*tokenizer.encode_prefix(completion, room), tokenizer.eos_id] if room else []
    ids = (prompt_ids + completion_ids)[: seq_len + 1]
    n = len(ids) - 1  # real (input, target) pairs
    row = {key: np.zeros(seq_len, np.int32) for key in ("inputs", "targets", "segment_ids", "positions")}
    row["inputs"][:n], row["targets"][:n] = ids[:-1], ids[1:]
    row["segment_ids"][:n] = 1
    row["positions"][:n] = np.arange(n)
    row["loss_mask"] = np.zeros(seq_len, bool)
    # Target t is token t+1; it is a completion token when t+1 >= len(prompt_ids).
    row["loss_mask"][len(prompt_ids) - 1 : n] = True
    return row


@dataclasses.dataclass
class SkippedRows:
    """SFT examples left out of `sft_batches` because no completion token fits in their row.

    count: rows skipped so far, of `read` rows read; first: the first skipped prompt. Counts
    follow the rows the batches consumed in this process; they are not checkpointed (a restored
    run counts from 0), and the batches never depend on them.
    """

    count: int = 0
    read: int = 0
    first: str | None = None
    in_a_row: int = 0
    warned: bool = False

    def keep(self, seq_len: int, batch_rows: int, pair: tuple[dict, dict]) -> bool:
        """False for a row with an empty loss mask; raises after `batch_rows` of them in a row."""
        example, row = pair
        self.read += 1
        if row["loss_mask"].any():
            self.in_a_row = 0
            return True
        prompt = repr(str(example.get("prompt"))[:60])
        self.count, self.in_a_row = self.count + 1, self.in_a_row + 1
        self.first = self.first or prompt
        if self.in_a_row >= batch_rows:
            raise ValueError(
                f"{self.in_a_row} SFT examples in a row (a whole batch of {batch_rows}) have no "
                f"completion token within seq_len={seq_len}: bos + prompt alone take more than "
                f"{seq_len} tokens (e.g. prompt {prompt}); seq_len is too small for this data: "
                "raise seq_len")
        return False

    def warn_once(self, seq_len: int) -> None:
        if self.count and not self.warned:
            self.warned = True
            warnings.warn(
                f"sft_batches skipped {self.count} of the first {self.read} examples: bos + prompt "
                f"take more than seq_len={seq_len} tokens, so no completion token fits and the "
                f"loss mask would be empty (first: prompt {self.first}); raise seq_len to train on "
                "them. SkippedRows.count keeps counting without further warnings.")


def sft_batches(
    examples: grain.MapDataset, tokenizer: TextTokenizer, *, seq_len: int, batch_size: int, seed: int = 0,
    num_epochs: int | None = None, num_shards: int = 1, shard_index: int = 0,
    system: str = chat.SHORT_SYSTEM, skipped: SkippedRows | None = None,
) -> grain.IterDataset:
    """One example per row (prompt -> completion), right-padded to `seq_len`; rows without a
    trainable token are skipped and counted in `skipped` (see the module docstring)."""
    rows = _per_shard_batch_size(batch_size, num_shards, shard_index)
    skipped = SkippedRows() if skipped is None else skipped
    ds = _ordered(examples, seed=seed, num_epochs=num_epochs, num_shards=num_shards, shard_index=shard_index)
    ds = ds.map(lambda ex: (ex, sft_features(tokenizer, ex, seq_len, system)))
    # Filtered after to_iter_dataset, in the thread that consumes the batches, so the counts
    # follow consumed rows rather than rows prefetched ahead.
    ds = ds.to_iter_dataset().filter(functools.partial(skipped.keep, seq_len, rows))

    def stack(batch_rows):
        skipped.warn_once(seq_len)
        return _stack_batch(batch_rows)

    return ds.map(lambda pair: pair[1]).batch(rows, drop_remainder=True, batch_fn=stack)


def rl_prompt_features(tokenizer: TextTokenizer, example: dict, max_prompt_len: int, pad_side: str = "left",
                       system: str = chat.SHORT_SYSTEM) -> dict:
    """Token arrays of one RL prompt plus the example itself, untouched, for its verifier."""
    ids = chat_prompts.prompt_ids(tokenizer, example, system)
    if len(ids) > max_prompt_len:
        # Cutting a prompt would change the problem the reward checks, so refuse instead.
        raise ValueError(f"prompt {example['prompt'][:60]!r} is {len(ids)} tokens > "
                         f"max_prompt_len={max_prompt_len}; raise max_prompt_len")
    tokens = np.zeros(max_prompt_len, np.int32)
    mask = np.zeros(max_prompt_len, bool)
    span = slice(max_prompt_len - len(ids), None) if pad_side == "left" else slice(0, len(ids))
    tokens[span], mask[span] = ids, True
    return {"prompt_tokens": tokens, "prompt_mask": mask, "prompt_lengths": np.int32(len(ids)),
            "example": example}


def rl_batch(rows: Sequence[dict]) -> dict:
    """Stack `rl_prompt_features` rows into a prompt batch (token arrays + the examples)."""
    batch = {key: np.stack([row[key] for row in rows])
             for key in ("prompt_tokens", "prompt_mask", "prompt_lengths")}
    examples = np.empty(len(rows), dtype=object)  # filled one by one: dicts stay dicts
    for i, row in enumerate(rows):
        examples[i] = row["example"]
    batch["examples"] = examples
    return batch


def rl_prompt_batches(
    examples: grain.MapDataset, tokenizer: TextTokenizer, *, max_prompt_len: int, batch_size: int,
    seed: int = 0, num_epochs: int | None = None, num_shards: int = 1, shard_index: int = 0,
    pad_side: str = "left", system: str = chat.SHORT_SYSTEM,
) -> grain.IterDataset:
    """Prompt batches for sampling; left padding (default) makes every prompt end at column P-1."""
    if pad_side not in ("left", "right"):
        raise ValueError(f"pad_side={pad_side!r} must be 'left' or 'right'")
    rows = _per_shard_batch_size(batch_size, num_shards, shard_index)
    ds = _ordered(examples, seed=seed, num_epochs=num_epochs, num_shards=num_shards, shard_index=shard_index)
    ds = ds.map(lambda ex: rl_prompt_features(tokenizer, ex, max_prompt_len, pad_side, system))
    return ds.to_iter_dataset().batch(rows, drop_remainder=True, batch_fn=rl_batch)


def first_batches(dataset: grain.IterDataset, n: int) -> list[dict]:
    """The first `n` batches, e.g. for a smoke run or a test."""
    iterator = iter(dataset)
    return [next(iterator) for _ in range(n)]
