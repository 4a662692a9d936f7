"""One completion whose verifier raises scores 0, is counted and warned about, and the rest of
the batch is judged as usual (evaluation, GRPO and the rejection filter all go through `score`);
an example that lacks what its task reads is a data error and still raises, naming the example."""

import dataclasses
import types

import jax
import numpy as np
import pytest

from r1jax import config, models
from r1jax import data as rdata
from r1jax.data import chat, tasks
from r1jax.rl.grpo_stage import RLConfig, RolloutBatches
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.rollout import scoring
from r1jax.sharding import MeshConfig, make_mesh
from tests.rollout import scripted


class VerifierBug(Exception):
    """What a verifier's bug raises on text it did not expect."""


class RewardBug(Exception):
    """Another one: each (task, exception type) is warned about once per process."""


def _fragile(judge, error):
    """`judge`, raising `error` on any completion that says "boom"."""
    def wrapped(completion, example):
        if "boom" in completion:
            raise error("unexpected text")
        return judge(completion, example)
    return wrapped


@pytest.fixture
def fragile_countdown(monkeypatch):
    """make_fragile(error): countdown's verify and reward raise `error` on "boom"."""
    def make_fragile(error):
        task = tasks.TASKS["countdown"]
        monkeypatch.setitem(tasks.TASKS, "countdown", dataclasses.replace(
            task, verify=_fragile(task.verify, error), reward=_fragile(task.reward, error)))
    return make_fragile


EXAMPLE = {"task": "countdown", "numbers": [12, 3, 5], "target": 41, "answer": "(12*3)+5"}
SOLVED = chat.format_completion("search", "(12*3)+5")
BOOM = chat.format_completion("boom", "(12*3)+5")


def test_a_verifier_exception_scores_that_sample_zero(fragile_countdown):
    fragile_countdown(VerifierBug)
    completions = [SOLVED, BOOM, chat.format_completion("x", "12*3"), SOLVED]
    with pytest.warns(UserWarning, match=r"task 'countdown' raised VerifierBug: unexpected text "
                                         r"\(1 of 4 completions"):
        got = scoring.score(completions, [EXAMPLE] * 4, (("accuracy", 1.0), ("format", 0.5)))
    assert got.errors.tolist() == [False, True, False, False]
    assert got.correct.tolist() == [True, False, False, True]
    np.testing.assert_allclose(got.reward, [1.5, 0.0, 0.6, 1.5])
    np.testing.assert_allclose(got.parts["accuracy"], [1.0, 0.0, 0.1, 1.0])
    assert got.formatted.tolist() == [True, False, True, True]
    assert got.keys == ["(12*3)+5", None, "12*3", "(12*3)+5"]  # no vote from an unjudged sample
    clean = scoring.score([SOLVED], [EXAMPLE])
    assert clean.errors.tolist() == [False] and clean.correct.tolist() == [True]


@pytest.mark.parametrize("example,error,message", [
    ({"task": "countdown", "target": 41}, KeyError, "needs the fields \\['numbers'\\]"),
    ({"task": "countdown", "numbers": [12, "three", 5], "target": 41}, ValueError,
     "list of integer 'numbers'"),
    ({"task": "countdown", "numbers": "12 3 5", "target": 41}, ValueError,
     "list of integer 'numbers'"),
    ({"task": "arithmetic", "op": "+", "a": "two", "b": 3}, ValueError, "integer operands"),
    ({"task": "arithmetic", "op": "-", "a": 2, "b": 3}, ValueError, "op='-' is not supported"),
    ({"prompt": "Compute 2+3."}, KeyError, "no 'answer'"),
    ({"task": "gsm8k", "answer": "5"}, ValueError, "task='gsm8k' has no verifier"),
])
def test_examples_missing_their_fields_still_raise(fragile_countdown, example, error, message):
    """Even for completions with no answer to parse, and when the other examples are fine."""
    fragile_countdown(VerifierBug)
    completions = [SOLVED, "no answer here", "boom"]
    with pytest.raises(error, match=message) as raised:
        scoring.score(completions, [EXAMPLE, example, EXAMPLE])
    assert any("in example 1 given to score()" in note for note in raised.value.__notes__)


def test_grpo_logs_verifier_errors(tokenizer, monkeypatch, fragile_countdown):
    rl = RLConfig(task="countdown", prompts_per_step=2, max_prompt_len=64, max_new_tokens=24,
                  grpo=GRPOConfig(group_size=2))
    fragile_countdown(RewardBug)
    first = next(iter(rdata.rl_prompt_batches(
        rdata.task_dataset("countdown", seed=rl.prompt_seed), tokenizer, max_prompt_len=64,
        batch_size=2, seed=rl.prompt_seed)))
    answers = {ex["prompt"]: ex["answer"] for ex in first["examples"]}
    scripted.install(monkeypatch, tokenizer, lambda question: [
        chat.format_completion("boom", answers[question]),
        chat.format_completion("search", answers[question])])
    model_cfg = config.tiny(vocab_size=512, num_layers=1, first_k_dense=1, num_mtp_modules=0)
    state = types.SimpleNamespace(params=models.init(model_cfg, jax.random.key(0)))
    source = RolloutBatches(model_cfg, rl, tokenizer)
    source.start(make_mesh(MeshConfig()), state)
    with pytest.warns(UserWarning, match="RewardBug"):
        batch, metrics = source.next(state)
    assert metrics["verifier_errors"] == 2
    assert metrics["accuracy"] == 0.5
    advantages = np.asarray(batch["advantages"]).reshape(2, 2)
    assert (advantages[:, 0] < 0).all() and (advantages[:, 1] > 0).all()


def test_a_slow_verifier_is_cut_off_and_counted(monkeypatch):
    """A verifier stuck on one completion (here: sleeping) is stopped at the time limit; that
    completion scores 0 and the others are judged as usual."""
    import time

    task = tasks.TASKS["countdown"]

    def slow_on_boom(completion, example):
        if "boom" in completion:
            time.sleep(60)
        return task.verify(completion, example)

    monkeypatch.setitem(tasks.TASKS, "countdown", dataclasses.replace(task, verify=slow_on_boom))
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="JudgeTimeout: judging one completion took more than 0.2 s"):
        got = scoring.score([SOLVED, BOOM, SOLVED], [EXAMPLE] * 3, time_limit_s=0.2)
    assert time.perf_counter() - start < 5
    assert got.errors.tolist() == [False, True, False]
    assert got.correct.tolist() == [True, False, True]


def test_an_alarm_whose_exception_is_dropped_fires_again(monkeypatch):
    """Python prints and drops an exception raised in a gc callback or a `__del__`, and library
    code may catch even a BaseException: the alarm repeats until the verifier has stopped."""
    import time

    task = tasks.TASKS["countdown"]

    def drops_the_first_alarm(completion, example):
        if "boom" in completion:
            try:
                time.sleep(60)
            except scoring.JudgeTimeout:
                pass  # dropped, as in a gc callback
            time.sleep(60)
        return task.verify(completion, example)

    assert_boom_is_cut_off(monkeypatch, drops_the_first_alarm)


def assert_boom_is_cut_off(monkeypatch, verify):
    """With `verify` as countdown's verifier, judging BOOM is stopped at a 0.2 s limit (an error,
    warned) and SOLVED after it is judged as usual, all within 2 s."""
    import time

    monkeypatch.setitem(tasks.TASKS, "countdown",
                        dataclasses.replace(tasks.TASKS["countdown"], verify=verify))
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="JudgeTimeout"):
        got = scoring.score([BOOM, SOLVED], [EXAMPLE] * 2, time_limit_s=0.2)
    assert time.perf_counter() - start < 2
    assert got.errors.tolist() == [True, False] and got.correct.tolist() == [False, True]


def test_an_alarm_dropped_in_a_finalizer_is_kept_from_the_unraisable_hook(monkeypatch):
    """A `__del__` that runs when the alarm fires drops its JudgeTimeout through
    `sys.unraisablehook`: expected (the alarm repeats), so the caller's hook does not see it,
    while another exception dropped in a finalizer still reaches that hook."""
    import sys
    import time

    seen = []

    def hook(unraisable):
        seen.append(unraisable.exc_type)

    monkeypatch.setattr(sys, "unraisablehook", hook)

    class SlowToFree:
        def __del__(self):
            time.sleep(60)

    class FailsToFree:
        def __del__(self):
            raise ValueError("a finalizer's own error")

    task = tasks.TASKS["countdown"]

    def frees_slowly(completion, example):
        FailsToFree()
        if "boom" in completion:
            SlowToFree()  # freed at once: the alarm fires inside its __del__
            time.sleep(60)
        return task.verify(completion, example)

    assert_boom_is_cut_off(monkeypatch, frees_slowly)
    assert seen == [ValueError, ValueError]
    assert sys.unraisablehook is hook  # restored after each judgement
