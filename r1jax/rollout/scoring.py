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
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Callable, Sequence

import numpy as np

from r1jax.data import chat
from r1jax.data.tasks import task_of
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
    no weights are given). parts: each named reward (R,). keys: canonical final answers (None
    when unparsed), the votes of cons@k.
    """

    correct: np.ndarray
    formatted: np.ndarray
    language: np.ndarray
    reward: np.ndarray
    parts: dict
    keys: list


def score(completions: Sequence[str], examples: Sequence[dict],
          weights: Sequence[tuple[str, float]] = (), script: str = "LATIN") -> Scores:
    """Judge each completion against its example (same length and order)."""
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
    check_rewards(weights)
    pairs = list(zip(completions, examples))
    correct = np.array([task_of(ex).verify(c, ex) for c, ex in pairs], bool)
    parts = {name: np.array([REWARDS[name](c, ex) for c, ex in pairs], np.float32)
             for name, _ in weights}
    reward = np.zeros(len(pairs), np.float32)
    for name, weight in weights:
        reward += np.float32(weight) * parts[name]
    return Scores(correct=correct,
                  formatted=np.array([has_r1_format(c) for c in completions], bool),
                  language=np.array([language_consistency(c, script) for c in completions],
                                    np.float32),
                  reward=reward, parts=parts, keys=[answer_key(c) for c in completions])
