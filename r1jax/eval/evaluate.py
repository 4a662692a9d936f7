"""Held-out evaluation as R1 reports it: k samples per problem at temperature 0.6 / top-p 0.95,
pass@1 = mean correctness over the k samples, cons@k = correctness of the majority answer.

Correctness is the task's own verifier (r1jax/rollout/scoring.py), so a Countdown answer counts
only when it is a valid expression over the given numbers that reaches the target.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import tqdm

from r1jax import data as rdata
from r1jax import models
from r1jax.field_checks import at_least, between, check_fields, one_of, positive
from r1jax.eval.pass_at_k import cons_at_k_verified, pass_at_1, pass_at_k
from r1jax.rollout import DRAFTS, SamplingConfig, generate, prompt_batches, score


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """A held-out set and how it is sampled. Problems: the first `num_problems` distinct held-out
    problems of `task` (r1jax/data/sources.py), disjoint from every training split; or, when
    `task` names a data file or save_to_disk directory (a test set), its first `num_problems`
    rows."""

    task: str = "arithmetic"
    task_kwargs: tuple = ()  # (knob, value) pairs, e.g. (("max_digits", 2),)
    # A data file's fields when its layout is not recognised by their names (r1jax/data/layouts.py).
    fields: rdata.FieldMap = dataclasses.field(default_factory=rdata.FieldMap)
    num_problems: int = 64
    k: int = 4  # samples per problem
    temperature: float = 0.6  # R1's evaluation sampling [REFERENCE §4.4]
    top_p: float = 0.95
    max_prompt_len: int = 48
    max_new_tokens: int = 64
    prompts_per_batch: int = 16
    seed: int = 1234  # the sampling stream (batch i samples with fold_in(key(seed), i))
    kl_seq_len: int = 128  # rows of written-out solutions on which a student's KL to its teacher
    #                        is measured (r1jax/distill/teacher_kl.py)
    # "mtp": decode speculatively, the model's MTP module drafting (r1jax/rollout/speculative.py):
    # the same distribution, fewer main-model steps. One EvalConfig serves every stage of a
    # recipe, so models without an MTP module (the dense students) decode plainly.
    draft: str = "none"

    def __post_init__(self):
        check_fields(self, num_problems=at_least(1), k=at_least(1), temperature=positive(),
                     top_p=between(0, 1, include_low=False), max_prompt_len=at_least(1),
                     max_new_tokens=at_least(1), prompts_per_batch=at_least(1),
                     kl_seq_len=at_least(2), draft=one_of(*DRAFTS))


def heldout_set(cfg: EvalConfig) -> list[dict]:
    if cfg.task not in rdata.tasks.TASKS and rdata.is_data_path(cfg.task):
        problems = rdata.file_dataset([cfg.task], cfg.fields)
        if len(problems) < cfg.num_problems:
            raise ValueError(f"eval.num_problems={cfg.num_problems} but {cfg.task} has "
                             f"{len(problems)} problems; ask for at most that many")
        return [problems[i] for i in range(cfg.num_problems)]
    return rdata.heldout_problems(cfg.task, num_problems=cfg.num_problems, **dict(cfg.task_kwargs))


def sample_problems(model_cfg, params, tok, problems: list[dict], cfg: EvalConfig, *, mesh=None,
                    progress: bool = False) -> list[dict]:
    """One record per problem: the problem's fields and its k samples (`texts`, `correct`,
    `answers` (the verifier's canonical answer, None when unparsed), `lengths` in tokens)."""
    drafts = cfg.draft != "none" and models.mtp_depth(model_cfg) > 0
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, num_samples=cfg.k,
                              draft=cfg.draft if drafts else "none")
    key = jax.random.key(cfg.seed)
    batches = prompt_batches(tok, problems, batch_size=cfg.prompts_per_batch,
                             max_prompt_len=cfg.max_prompt_len)
    bar = tqdm.tqdm(total=len(problems), desc="evaluate", unit="problem", disable=not progress)
    records = []
    for i, (batch, real) in enumerate(batches):
        rollout = generate(model_cfg, params, tok, batch, sampling, jax.random.fold_in(key, i),
                           mesh=mesh).first_prompts(real)
        scores = score(rollout.texts, rollout.examples)
        for p in range(real):
            rows = slice(p * cfg.k, (p + 1) * cfg.k)
            records.append({**rollout.examples[rows.start], "texts": rollout.texts[rows],
                            "correct": scores.correct[rows].tolist(),
                            "answers": [None if a is None else str(a) for a in scores.keys[rows]],
                            "lengths": rollout.lengths[rows].tolist(),
                            **({} if scores.revised is None
                               else {"revised": scores.revised[rows].tolist()})})
        bar.update(real)
    bar.close()
    return records


def summarize(records: list[dict], pass_k: tuple[int, ...] = ()) -> dict:
    """pass@1 (mean over each problem's samples), unbiased pass@k for each k in `pass_k`, cons@k
    over all samples (the verifier-judged majority vote), all in percent; mean response length;
    `revisions`, the percent of samples that check and revise an earlier step, where the task
    has that notion (Countdown)."""
    correct = [r["correct"] for r in records]
    k = len(correct[0])
    out = {"pass@1": 100 * pass_at_1(correct)}
    for j in pass_k:
        if j > 1:
            out[f"pass@{j}"] = 100 * pass_at_k(correct, j)
    out[f"cons@{k}"] = 100 * cons_at_k_verified([r["answers"] for r in records], correct)
    out["response_length"] = float(np.mean([n for r in records for n in r["lengths"]]))
    if all("revised" in r for r in records):  # tasks with checkable, revisable steps
        out["revisions"] = 100 * float(np.mean([v for r in records for v in r["revised"]]))
    out["problems"] = len(records)
    return out


def evaluate(model_cfg, params, tok, problems: list[dict], cfg: EvalConfig, *, mesh=None) -> dict:
    """pass@1 (over k samples) and cons@k in percent, plus the mean response length in tokens."""
    return summarize(sample_problems(model_cfg, params, tok, problems, cfg, mesh=mesh))
