"""Scoring completions: the task's own verifier, the R1 format, language consistency, rewards.

One place judges a completion, for every caller: evaluation (pass@1, cons@k), GRPO (the reward
and the logged accuracy) and the rejection filter all read `score`. Correctness is always the
example's task verifier (`r1jax.data.tasks.task_of(example).verify`), never a comparison with a
field chosen by the caller: a Countdown answer "41" is not a solution of "use 3 12 5 to make 41".

Rewards are `fn(completion, example) -> float`, named so that configs can weight them:
  accuracy  the task's own reward (arithmetic and files: 1 if correct else 0; Countdown:
            TinyZero's 1 / 0.1 / 0, REFERENCE §5.1)
  format    1 for the R1 structure: `<think>`, `</think>`, `<answer>`, `</answer>` each once, in
            that order (Logic-RL's check, REFERENCE §5.1)
  language  the fraction of Latin-script words in the CoT (R1 §2.3.2)

Faults: model text is adversarial and verifiers are code, so an exception while one completion
is judged must not end a GRPO step, an evaluation or a rejection pass. That completion scores 0,
is not correct, not formatted and casts no vote; `Scores.errors` flags it, GRPO logs the count as
`verifier_errors`, and the first error of each (task, exception type) is warned once. An example
that lacks the fields its task reads is a data error, not a judgement: every example is checked
once (`Task.check_example`) before any completion is judged, and that error is raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import unicodedata
import warnings
from typing import Callable, Sequence

import numpy as np

from r1jax.data import chat
from r1jax.data.tasks import Task, task_of
from r1jax.data.tasks.answers import answer_key, judged_text

RewardFn = Callable[[str, dict], float]


def has_r1_format(completion) -> bool:
    """`<think>`, `</think>`, `<answer>`, `</answer>` each exactly once, in that order."""
    text = judged_text(completion)
    if any(text.count(tag) != 1 for tag in chat.TAGS):
        return False
    positions = [text.index(tag) for tag in chat.TAGS]
    return positions == sorted(positions)


def chain_of_thought(completion) -> str:
    """The text between `<think>` and `</think>`, or the whole completion without them."""
    text = judged_text(completion)
    start, end = text.find(chat.THINK_OPEN), text.find(chat.THINK_CLOSE)
    return text[start + len(chat.THINK_OPEN) : end] if 0 <= start < end else text


def _in_script(word: str, script: str) -> bool:
    return all(unicodedata.name(ch, "?").split(" ")[0] == script for ch in word if ch.isalpha())


def language_consistency(completion, script: str = "LATIN") -> float:
    """Num(words in `script`) / Num(words) in the CoT (R1 §2.3.2); words without letters
    (numbers, equations) do not count, and a CoT with no such words scores 1. `script` is a
    Unicode script name: "LATIN", "CYRILLIC", "CJK", ..."""
    words = [w for w in chain_of_thought(completion).split() if any(ch.isalpha() for ch in w)]
    if not words:
        return 1.0
    return sum(_in_script(w, script.upper()) for w in words) / len(words)


REWARDS: dict[str, RewardFn] = {
    "accuracy": lambda completion, example: task_of(example).reward(completion, example),
    "format": lambda completion, example: float(has_r1_format(completion)),
    "language": lambda completion, example: language_consistency(completion),
}


def check_rewards(weights: Sequence[tuple[str, float]]) -> None:
    """Fail early on a misspelled reward name or a non-numeric weight."""
    for item in weights:
        if len(item) != 2 or not isinstance(item[1], (int, float)):
            raise ValueError(f"rewards must be (name, weight) pairs, got {item!r}")
    unknown = [name for name, _ in weights if name not in REWARDS]
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; choose from {sorted(REWARDS)}")


@dataclasses.dataclass(frozen=True)
class Scores:
    """Per-completion verdicts, one entry per completion, in the order given.

    correct (R,) bool: the task's verifier. formatted (R,) bool: the R1 structure. language (R,):
    language consistency of the CoT. reward (R,) float32: sum of the weighted rewards (zeros when
    no weights are given). parts: each named reward (R,). keys: canonical final answers (the
    task's `answer_key`, else `answers.answer_key`; None when unparsed), the votes of cons@k.
    """

    correct: np.ndarray
    formatted: np.ndarray
    language: np.ndarray
    reward: np.ndarray
    parts: dict
    keys: list
    errors: np.ndarray  # (R,) bool: judging raised; the completion scored 0 (module docstring)
    # (R,) bool: the completion checks and revises an earlier step (its task's `revises`); None
    # when no example's task has that notion.
    revised: np.ndarray | None = None


def _checked_tasks(examples: Sequence[dict]) -> list[Task]:
    """Each example's task, with the example's fields checked once (examples repeat G times)."""
    checked: dict[int, Task] = {}
    for i, example in enumerate(examples):
        if id(example) not in checked:
            try:
                checked[id(example)] = task_of(example)
                checked[id(example)].check_example(example)
            except Exception as error:
                prompt = example.get("prompt") if isinstance(example, dict) else None
                error.add_note(f"in example {i} given to score() (prompt {str(prompt)[:60]!r}): "
                               "a data error, raised before any completion is judged")
                raise
    return [checked[id(example)] for example in examples]


def _judge(completion, example: dict, task: Task, weights, script: str) -> tuple:
    """(correct, weighted parts, formatted, language, key) of one completion."""
    return (bool(task.verify(completion, example)),
            [float(REWARDS[name](completion, example)) for name, _ in weights],
            has_r1_format(completion), language_consistency(completion, script),
            (task.answer_key or answer_key)(completion))


_WARNED: set[tuple[str, str]] = set()  # (task, exception type) pairs already warned about


def _warn_once(task: str, error: Exception, count: int, total: int, completion) -> None:
    if (task, type(error).__name__) in _WARNED:
        return
    _WARNED.add((task, type(error).__name__))
    warnings.warn(
        f"judging a completion of task {task!r} raised {type(error).__name__}: {error} "
        f"({count} of {total} completions in this call; first: {str(completion)[:60]!r}); "
        "those score 0 and count as not correct (Scores.errors, GRPO's verifier_errors). "
        f"Later {type(error).__name__}s of {task!r} are counted without a warning.", stacklevel=3)


class JudgeTimeout(BaseException):
    """Judging one completion took longer than its time limit.

    A BaseException (as math-verify's own TimeoutException) so that the `except Exception`
    blocks inside verifier libraries (math-verify, sympy) cannot swallow it and go on judging
    with no limit left; `score` catches it by name. It is the only alarm in a judgement: verifiers
    must not arm their own SIGALRM (math-verify's is turned off, r1jax/data/tasks/math_answers.py),
    since `signal.alarm` would replace this timer and cancel it on the way out."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise JudgeTimeout in the body after `seconds` (SIGALRM; main thread only, elsewhere the
    verifiers' size bounds are the only bound). Python code is interrupted between bytecodes, so
    this bounds verifiers written in Python; the size bounds keep each C operation short. Catch
    JudgeTimeout explicitly: it is not an Exception (see there).

    After `seconds` the alarm repeats every REPEAT_S until the body has ended: a handler that
    runs inside a garbage-collector callback or a `__del__` (sympy makes much garbage, and jax
    registers gc callbacks) has its exception dropped by Python, and one alarm alone would then
    leave the verifier running with no limit. Such a dropped JudgeTimeout is expected, so it is
    kept from `sys.unraisablehook` (which would print it, and which pytest turns into a failure);
    other unraisable exceptions go to the hook as before.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise JudgeTimeout(f"judging one completion took more than {seconds} s")

    hook = sys.unraisablehook

    def drop_own_alarms(unraisable):
        if not isinstance(unraisable.exc_value, JudgeTimeout):
            hook(unraisable)

    sys.unraisablehook = drop_own_alarms
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT_S)
    try:
        yield
    finally:
        try:  # an alarm due before the timer stops raises here: the rest is restored anyway
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)
            sys.unraisablehook = hook


REPEAT_S = 0.05  # how soon an expired alarm fires again when its exception was dropped


# A verifier that takes longer on one completion scores it 0 (counted in Scores.errors).
JUDGE_TIME_LIMIT_S = 2.0


def score(completions: Sequence[str], examples: Sequence[dict],
          weights: Sequence[tuple[str, float]] = (), script: str = "LATIN",
          time_limit_s: float = JUDGE_TIME_LIMIT_S) -> Scores:
    """Judge each completion against its example (same length and order). An example missing
    its task's fields raises; an exception while judging one completion, or judging it for more
    than `time_limit_s`, scores it 0."""
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
    check_rewards(weights)
    tasks = _checked_tasks(examples)
    unjudged = (False, [0.0] * len(weights), False, 0.0, None)
    verdicts, errors, first_errors = [], np.zeros(len(examples), bool), {}
    for i, (completion, example, task) in enumerate(zip(completions, examples, tasks)):
        try:
            with time_limit(time_limit_s):
                verdicts.append(_judge(completion, example, task, weights, script))
        # One sample's fault must not end the batch; JudgeTimeout is not an Exception.
        except (Exception, JudgeTimeout) as error:  # noqa: BLE001
            verdicts.append(unjudged)
            errors[i] = True
            first_errors.setdefault((task.name, type(error)), (error, completion, []))[2].append(i)
    for (name, _), (error, completion, rows) in first_errors.items():
        _warn_once(name, error, len(rows), len(examples), completion)
    correct, parts, formatted, language, keys = zip(*verdicts) if verdicts else ((),) * 5
    parts = np.array(parts, np.float32).reshape(len(verdicts), len(weights))
    reward = np.zeros(len(verdicts), np.float32)
    for j, (name, weight) in enumerate(weights):
        reward += np.float32(weight) * parts[:, j]
    revised = None
    if any(task.revises is not None for task in tasks):
        revised = np.array([task.revises is not None and bool(task.revises(c))
                            for c, task in zip(completions, tasks)], bool)
    return Scores(correct=np.array(correct, bool), formatted=np.array(formatted, bool),
                  language=np.array(language, np.float32), reward=reward,
                  parts={name: parts[:, j].copy() for j, (name, _) in enumerate(weights)},
                  keys=list(keys), errors=errors, revised=revised)
