"""Sequence distillation, R1's way: the teacher samples, rules filter, the student is SFT'd.

R1 builds its 600K reasoning SFT set by rejection sampling (REFERENCE §3.3, R1 §2.3.3): sample
several responses per prompt, keep only the correct ones, and drop chains of thought that mix
languages (or are unreadable); the distilled students are then trained with SFT only (R1 §2.4).
Here each prompt gets k samples from `r1jax.rl.sampling.sample`; a sample is kept when

  1. its reward (any `rewards` function, e.g. `accuracy_reward`) is >= `threshold`,
  2. it has the R1 structure (`rewards.has_r1_format`: each tag once, in order),
  3. its CoT is readable: `rewards.language_consistency` >= `min_language_consistency` (0.9),
  4. it is not a repeat of a completion already kept for the same prompt.

Kept completions are rewritten as `chat.format_completion(reasoning, answer)`, the exact text
`sft_batches` trains on for the embedded tasks: whitespace around the tags is normalised and
anything outside them (e.g. text the teacher wrote after `</answer>`) is dropped. Duplicates are
judged on this canonical text.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax
import numpy as np

from r1jax.data import chat, pipeline
from r1jax.eval.evaluate import decode_completions
from r1jax.rl import rewards
from r1jax.rl.sampling import SamplingConfig, sample

RECORD_FIELDS = ("prompt", "completion", "answer", "reward", "teacher", "seed", "sample_index")
# R1's evaluation sampling (REFERENCE §4.4), also a sound setting to draw SFT data with.
DEFAULT_SAMPLING = SamplingConfig(max_new_tokens=64, temperature=0.6, top_p=0.95)


def canonical_completion(text: str) -> str:
    """` <think> reasoning </think> <answer> answer </answer>` rebuilt from a well-formed text."""
    start, end = text.index(chat.THINK_OPEN) + len(chat.THINK_OPEN), text.index(chat.THINK_CLOSE)
    return chat.format_completion(text[start:end].strip(), rewards.extract_tagged_answer(text))


def _prompt_batches(tok, problems: Sequence[dict], prompts_per_batch: int, max_prompt_len: int,
                    system: str):
    """(first problem index, prompt_tokens (B, P), prompt_mask (B, P)) per batch of B prompts;
    the last batch is padded with copies of its last prompt, so `sample` compiles once."""
    features = [pipeline.rl_prompt_features(tok, ex, max_prompt_len, system=system)
                for ex in problems]
    for first in range(0, len(features), prompts_per_batch):
        rows = features[first:first + prompts_per_batch]
        rows += [rows[-1]] * (prompts_per_batch - len(rows))
        yield (first, np.stack([r["prompt_tokens"] for r in rows]),
               np.stack([r["prompt_mask"] for r in rows]))


def _reward_fields(problems: Sequence[dict], k: int) -> dict:
    """Every problem field as a column repeated k times (prompt-major), as the rewards take them."""
    names = sorted({name for ex in problems for name in ex})
    fields = {}
    for name in names:
        column = np.empty(len(problems) * k, dtype=object)  # filled one by one: lists stay lists
        for i, ex in enumerate(problems):
            for j in range(k):
                column[i * k + j] = ex.get(name)
        fields[name] = column
    return fields


def rejection_sample(model_cfg, params, tok, problems: Sequence[dict], *, k: int, reward_fn,
                     threshold: float = 1.0, sampling: SamplingConfig = DEFAULT_SAMPLING,
                     prompts_per_batch: int = 16, seed: int = 0, teacher_name: str = "teacher",
                     min_language_consistency: float = 0.9, script: str = "LATIN",
                     max_prompt_len: int = 64, system: str = chat.SHORT_SYSTEM,
                     require_format: bool = True) -> tuple[list[dict], dict]:
    """Sample k completions per problem from the teacher and keep the good, distinct ones.

    problems: dicts with `prompt` and the fields `reward_fn(prompts, completions, **fields)`
    needs (e.g. `answer`). require_format=False drops filter 2 (a smoke test of an untrained
    teacher with threshold below every reward keeps everything; unformatted text is kept as
    sampled). `sampling` gives temperature / top_p / max_new_tokens; its
    num_samples and stop_ids are replaced by k and the tokenizer's eos. Batch i of
    `prompts_per_batch` prompts samples with `fold_in(key(seed), i)`.

    Returns (records, stats). records: one dict per kept sample with `RECORD_FIELDS` (the
    provenance `teacher`, `seed`, `sample_index` (0..k-1) lets anyone trace a line back to its
    draw), ready for `write_sft_jsonl`. stats: `per_prompt`, one dict per problem with `sampled`
    (= k), `passed_reward`, `passed_format`, `readable` (each filter on its own), `duplicates`
    (passed all three but repeated a kept one) and `kept`; and the totals `sampled`, `kept`,
    `acceptance` (= kept / sampled).
    """
    if k < 1 or prompts_per_batch < 1:
        raise ValueError(f"k={k} and prompts_per_batch={prompts_per_batch} must be >= 1")
    if not problems:
        raise ValueError("problems is empty")
    scfg = dataclasses.replace(sampling, num_samples=k, stop_ids=(tok.eos_id,))
    key = jax.random.key(seed)
    texts: list[str] = []
    for i, (first, prompt_tokens, prompt_mask) in enumerate(
            _prompt_batches(tok, problems, prompts_per_batch, max_prompt_len, system)):
        out = jax.device_get(sample(model_cfg, scfg, params, prompt_tokens, prompt_mask,
                                    jax.random.fold_in(key, i)))
        real_rows = min(prompts_per_batch, len(problems) - first) * k  # drop the padding prompts
        texts += decode_completions(tok, out["tokens"][:real_rows], out["lengths"][:real_rows])

    prompts = [ex["prompt"] for ex in problems for _ in range(k)]
    scores = np.asarray(reward_fn(prompts, texts, **_reward_fields(problems, k)), np.float32)
    records, per_prompt = [], []
    for p, ex in enumerate(problems):
        counts = dict(prompt=ex["prompt"], sampled=k, passed_reward=0, passed_format=0, readable=0,
                      duplicates=0, kept=0)
        seen: set[str] = set()
        for j in range(k):
            text, score = texts[p * k + j], float(scores[p * k + j])
            formatted = rewards.has_r1_format(text)
            passed = (score >= threshold, formatted or not require_format,
                      rewards.language_consistency(text, script) >= min_language_consistency)
            for name, ok in zip(("passed_reward", "passed_format", "readable"), passed):
                counts[name] += ok
            if not all(passed):
                continue
            completion = canonical_completion(text) if formatted else text
            if completion in seen:
                counts["duplicates"] += 1
                continue
            seen.add(completion)
            counts["kept"] += 1
            records.append({"prompt": ex["prompt"], "completion": completion,
                            "answer": None if ex.get("answer") is None else str(ex["answer"]),
                            "reward": score, "teacher": teacher_name,
                            "seed": seed, "sample_index": j})
        per_prompt.append(counts)
    total = len(problems) * k
    return records, {"per_prompt": per_prompt, "sampled": total, "kept": len(records),
                     "acceptance": len(records) / total}


def write_sft_jsonl(records: Sequence[dict], path: str) -> int:
    """One JSON object per line, read back by `r1jax.data.file_dataset` as prompt/completion SFT
    examples (the provenance fields ride along). Returns the number of lines written."""
    if not path.endswith(".jsonl"):
        raise ValueError(f"{path}: SFT data files must end in .jsonl for file_dataset")
    for i, record in enumerate(records):
        missing = [name for name in ("prompt", "completion")
                   if not isinstance(record.get(name), str)]
        if missing:
            raise ValueError(f"record {i} lacks string field(s) {missing} "
                             f"(fields: {sorted(record)})")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)
