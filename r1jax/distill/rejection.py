"""Sequence distillation, R1's way: the teacher samples, rules filter, the student is SFT'd.

R1 builds its 600K reasoning SFT set by rejection sampling (REFERENCE §3.3, R1 §2.3.3): sample
several responses per prompt, keep only the correct ones, and drop chains of thought that mix
languages (or are unreadable); the distilled students are then trained with SFT only (R1 §2.4).
Here each prompt gets k samples from the rollout layer (`r1jax.rollout.generate`); a sample is
kept when

  1. its task's verifier says it is correct (`require_correct`; r1jax/rollout/scoring.py),
  2. it has the R1 structure (`has_r1_format`: each tag once, in order; `require_format`),
  3. its CoT is readable: `language_consistency` >= `min_language_consistency` (0.9),
  4. it is not a repeat of a completion already kept for the same prompt.

Kept completions are rewritten as `chat.format_completion(reasoning, answer)`, the exact text
`sft_batches` trains on for the embedded tasks: whitespace around the tags is normalised and
anything outside them (e.g. text the teacher wrote after `</answer>`) is dropped. Duplicates are
judged on this canonical text. A record keeps the problem's fields (`task`, `answer`, `numbers`,
`target`, ...), so the same verifier can judge the SFT set later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax

from r1jax.data import chat
from r1jax.data.tasks.answers import extract_tagged_answer
from r1jax.rollout import SamplingConfig, generate, prompt_batches, score

# Provenance fields of every record; the problem's own fields (but its worked solution) follow.
RECORD_FIELDS = ("prompt", "completion", "teacher", "seed", "sample_index")
_NOT_COPIED = ("completion", "reasoning", "noisy")  # the teacher's completion replaces these
# R1's evaluation sampling (REFERENCE §4.4), also a sound setting to draw SFT data with.
DEFAULT_SAMPLING = SamplingConfig(max_new_tokens=64, temperature=0.6, top_p=0.95)


def canonical_completion(text: str) -> str:
    """` <think> reasoning </think> <answer> answer </answer>` rebuilt from a well-formed text."""
    start, end = text.index(chat.THINK_OPEN) + len(chat.THINK_OPEN), text.index(chat.THINK_CLOSE)
    return chat.format_completion(text[start:end].strip(), extract_tagged_answer(text))


def _record(example: dict, completion: str, teacher: str, seed: int, sample_index: int) -> dict:
    fields = {k: v for k, v in example.items() if k not in (*_NOT_COPIED, "prompt")}
    if fields.get("answer") is not None:
        fields["answer"] = str(fields["answer"])  # as file_dataset reads it back
    return {"prompt": example["prompt"], "completion": completion, "teacher": teacher,
            "seed": seed, "sample_index": sample_index, **fields}


def rejection_sample(model_cfg, params, tok, problems: Sequence[dict], *, k: int,
                     sampling: SamplingConfig = DEFAULT_SAMPLING, prompts_per_batch: int = 16,
                     seed: int = 0, teacher_name: str = "teacher", require_correct: bool = True,
                     require_format: bool = True, min_language_consistency: float = 0.9,
                     script: str = "LATIN", max_prompt_len: int = 64,
                     system: str = chat.SHORT_SYSTEM, mesh=None) -> tuple[list[dict], dict]:
    """Sample k completions per problem from the teacher and keep the good, distinct ones.

    problems: example dicts with `prompt` and what their task's verifier reads (e.g. `answer`).
    require_correct / require_format=False drop filters 1 / 2 (a smoke test of an untrained
    teacher keeps everything readable; unformatted text is kept as sampled). `sampling` gives
    temperature / top_p / max_new_tokens; its num_samples is replaced by k. Batch i of
    `prompts_per_batch` prompts samples with `fold_in(key(seed), i)`.

    Returns (records, stats). records: one dict per kept sample with `RECORD_FIELDS` (the
    provenance `teacher`, `seed`, `sample_index` (0..k-1) lets anyone trace a line back to its
    draw) and the problem's fields, ready for `write_sft_jsonl`. stats: `per_prompt`, one dict per
    problem with `sampled` (= k), `correct`, `formatted`, `readable` (each filter on its own),
    `duplicates` (passed all three but repeated a kept one) and `kept`; and the totals `sampled`,
    `kept`, `acceptance` (= kept / sampled).
    """
    if k < 1 or prompts_per_batch < 1:
        raise ValueError(f"k={k} and prompts_per_batch={prompts_per_batch} must be >= 1")
    scfg = dataclasses.replace(sampling, num_samples=k)
    key = jax.random.key(seed)
    texts: list[str] = []
    batches = prompt_batches(tok, problems, batch_size=prompts_per_batch,
                             max_prompt_len=max_prompt_len, system=system)
    for i, (batch, real) in enumerate(batches):
        rollout = generate(model_cfg, params, tok, batch, scfg, jax.random.fold_in(key, i),
                           mesh=mesh).first_prompts(real)
        texts += rollout.texts

    examples = [ex for ex in problems for _ in range(k)]
    scores = score(texts, examples, script=script)
    records, per_prompt = [], []
    for p, ex in enumerate(problems):
        counts = dict(prompt=ex["prompt"], sampled=k, correct=0, formatted=0, readable=0,
                      duplicates=0, kept=0)
        seen: set[str] = set()
        for j in range(k):
            i = p * k + j
            verdicts = {"correct": bool(scores.correct[i]), "formatted": bool(scores.formatted[i]),
                        "readable": bool(scores.language[i] >= min_language_consistency)}
            for name, ok in verdicts.items():
                counts[name] += ok
            required = {"correct": require_correct, "formatted": require_format, "readable": True}
            if not all(ok or not required[name] for name, ok in verdicts.items()):
                continue
            completion = canonical_completion(texts[i]) if verdicts["formatted"] else texts[i]
            if completion in seen:
                counts["duplicates"] += 1
                continue
            seen.add(completion)
            counts["kept"] += 1
            records.append(_record(ex, completion, teacher_name, seed, j))
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
    partial = path + ".partial"  # renamed into place when whole: a reader never sees half a set
    with open(partial, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return len(records)
