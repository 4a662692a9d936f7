"""Held-out evaluation as R1 reports it: k samples per problem at temperature 0.6 / top-p 0.95,
pass@1 = mean correctness over the k samples, cons@k = majority vote over the extracted answers."""

from __future__ import annotations

import dataclasses

import grain
import jax
import numpy as np

from r1jax.data import pipeline
from r1jax.eval.pass_at_k import cons_at_k, pass_at_1
from r1jax.rl import rewards
from r1jax.rl.sampling import SamplingConfig, sample


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    num_problems: int = 64
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 64
    prompts_per_batch: int = 16
    seed: int = 1234


def decode_completions(tok, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Generated ids -> text, without the trailing EOS. Ids past the tokenizer's vocabulary (the
    model's embedding table may be larger) decode as unknown."""
    out = []
    for row, n in zip(tokens, lengths):
        ids = [int(t) if int(t) < tok.vocab_size else tok.unk_id for t in row[:n] if int(t) != tok.eos_id]
        out.append(tok.decode(ids))
    return out


def evaluate(model_cfg, params, tok, problems: list[dict], cfg: EvalConfig,
             reward_fn=rewards.accuracy_reward, max_prompt_len: int = 64) -> dict:
    """pass@1 (over k samples) and cons@k in percent, plus the mean response length in tokens."""
    scfg = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                          top_p=cfg.top_p, num_samples=cfg.k, stop_ids=(tok.eos_id,))
    rows = len(problems) - len(problems) % cfg.prompts_per_batch
    if rows == 0:
        raise ValueError(f"{len(problems)} problems < prompts_per_batch={cfg.prompts_per_batch}")
    ds = grain.MapDataset.source(problems[:rows]).map(
        lambda ex: pipeline.rl_prompt_features(tok, ex, max_prompt_len))
    batches = ds.to_iter_dataset().batch(cfg.prompts_per_batch, batch_fn=pipeline._rl_batch)
    correct, answers, golds, lengths = [], [], [], []
    key = jax.random.key(cfg.seed)
    for i, batch in enumerate(batches):
        out = jax.device_get(sample(model_cfg, scfg, params, batch["prompt_tokens"],
                                    batch["prompt_mask"], jax.random.fold_in(key, i)))
        texts = decode_completions(tok, out["tokens"], out["lengths"])
        fields = {name: np.repeat(batch[name], cfg.k) for name in ("answer",)}
        scores = reward_fn([None] * len(texts), texts, **fields)
        for j in range(len(batch["answer"])):
            sl = slice(j * cfg.k, (j + 1) * cfg.k)
            correct.append([bool(s > 0.5) for s in scores[sl]])
            answers.append([rewards.extract_answer(t) for t in texts[sl]])
            golds.append(batch["answer"][j])
        lengths.extend(out["lengths"].tolist())
    normalize = lambda a: rewards.canonical_answer(str(a))  # noqa: E731
    return {"pass@1": 100 * pass_at_1(correct),
            f"cons@{cfg.k}": 100 * cons_at_k(answers, golds, normalize=normalize),
            "response_length": float(np.mean(lengths)), "problems": rows}
