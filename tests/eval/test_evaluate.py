"""Held-out evaluation of a real (random) model end to end: every problem is counted, a padded
last batch included, and an untrained model is never right."""

import jax
import pytest

from r1jax import config, models
from r1jax.eval.evaluate import EvalConfig, evaluate, heldout_set


@pytest.mark.parametrize("task", ["arithmetic", "countdown"])
def test_random_model_scores_zero_on_every_problem(tokenizer, task):
    cfg = config.tiny(vocab_size=512, num_layers=2, num_mtp_modules=0)
    params = models.init(cfg, jax.random.key(0))
    ev = EvalConfig(task=task, num_problems=3, k=2, prompts_per_batch=2, max_prompt_len=64,
                    max_new_tokens=8)
    problems = heldout_set(ev)
    result = evaluate(cfg, params, tokenizer, problems, ev)
    # Both tasks count responses that check or revise; 8 random tokens do neither.
    assert result == {"pass@1": 0.0, "cons@2": 0.0, "response_length": result["response_length"],
                      "revisions": 0.0, "problems": 3}
    assert 1 <= result["response_length"] <= 8
