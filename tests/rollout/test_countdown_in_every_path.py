"""A Countdown answer that has the target's value but is not a solution ("41" for "use 3 12 5 to
make 41") is wrong in every path that judges completions: held-out evaluation, the GRPO reward
and accuracy, and the rejection filter. Each group of two samples holds that answer and a real
solution (the generator's expression); a comparison of values with the gold expression would
accept both. The solution's reasoning rejects an attempt before its hit: half of the samples
revise, which evaluation and rollouts count."""

import types

import jax
import numpy as np
import pytest

from r1jax import config, models
from r1jax import data as rdata
from r1jax.data import chat
from r1jax.distill.rejection import rejection_sample
from r1jax.eval.evaluate import EvalConfig, evaluate, heldout_set
from r1jax.rl.grpo_stage import RLConfig, RolloutBatches
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.sharding import MeshConfig, make_mesh
from tests.rollout import scripted

PROMPT_LEN = 64
SEARCH = "1+1=2 no; 2+3=5 yes"  # a checked, rejected attempt, then another


@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer


def value_equal_then_solution(problems):
    """question -> [bare target (wrong), the gold expression (right)], both well-formed."""
    by_question = {p["prompt"]: p for p in problems}

    def script(question):
        p = by_question[question]
        return [chat.format_completion("guess", str(p["target"])),
                chat.format_completion(SEARCH, p["answer"])]

    return script


def test_evaluation(tok, monkeypatch):
    cfg = EvalConfig(task="countdown", num_problems=3, k=2, prompts_per_batch=2,
                     max_prompt_len=PROMPT_LEN)
    problems = heldout_set(cfg)
    scripted.install(monkeypatch, tok, value_equal_then_solution(problems))
    result = evaluate(None, None, tok, problems, cfg)
    assert result["pass@1"] == 50.0
    # Two answers tie and the first (the bare target) wins the vote: it is not a solution.
    assert result["cons@2"] == 0.0
    assert result["revisions"] == 50.0


def test_grpo_reward_and_accuracy(tok, monkeypatch):
    rl = RLConfig(task="countdown", prompts_per_step=2, max_prompt_len=PROMPT_LEN,
                  max_new_tokens=48, grpo=GRPOConfig(group_size=2))
    # The prompts the source will draw: the same pipeline, the same seed.
    first = next(iter(rdata.rl_prompt_batches(
        rdata.task_dataset("countdown", seed=rl.prompt_seed), tok, max_prompt_len=PROMPT_LEN,
        batch_size=2, seed=rl.prompt_seed)))
    scripted.install(monkeypatch, tok, value_equal_then_solution(list(first["examples"])))
    model_cfg = config.tiny(vocab_size=512, num_layers=1, first_k_dense=1, num_mtp_modules=0)
    state = types.SimpleNamespace(params=models.init(model_cfg, jax.random.key(0)))
    source = RolloutBatches(model_cfg, rl, tok)
    source.start(make_mesh(MeshConfig()), state)
    batch, metrics = source.next(state)
    assert metrics["accuracy"] == 0.5
    assert metrics["revisions"] == 50.0
    assert metrics["reward_accuracy"] == pytest.approx((0.1 + 1.0) / 2)  # TinyZero's 0.1 / 1
    advantages = np.asarray(batch["advantages"]).reshape(2, 2)
    assert (advantages[:, 0] < 0).all() and (advantages[:, 1] > 0).all()


def test_rejection_filter(tok, monkeypatch):
    problems = rdata.distinct_problems("countdown", num_problems=3, seed=7, split=rdata.TRAIN)
    scripted.install(monkeypatch, tok, value_equal_then_solution(problems))
    records, stats = rejection_sample(None, None, tok, problems, k=2, prompts_per_batch=2,
                                      max_prompt_len=PROMPT_LEN)
    assert [r["completion"] for r in records] == [
        chat.format_completion(SEARCH, p["answer"]) for p in problems]
    assert [p["correct"] for p in stats["per_prompt"]] == [1, 1, 1]
    assert all(r["task"] == "countdown" and r["numbers"] == p["numbers"]
               for r, p in zip(records, problems))
