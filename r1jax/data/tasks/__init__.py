"""Verifiable tasks: generated deterministically from (seed, index), each with its own verifier.

Each example is a dict with `task`, `prompt`, `reasoning`, `answer` (strings) and `noisy` (the
trace was corrupted on purpose), plus task fields: `op`, `a`, `b` for arithmetic; `numbers`,
`target` for countdown; `math` examples come from users' files (r1jax/data/layouts.py) and carry
`task`, `prompt`, `answer` and optionally `reasoning`. The same dict serves pretraining (the full
worked text), SFT (prompt -> completion) and RL (prompt + the fields the verifier needs).

A task owns how its completions are judged: `verify(completion, example) -> bool` (correct or
not: pass@1, cons@k, the rejection filter) and `reward(completion, example) -> float` (its
accuracy reward in GRPO). `check_example(example)` raises when an example lacks the fields these
read: a data error, which scoring reports as such and never confuses with a wrong answer.
`task_of(example)` finds the task of any example, a record of a user's file included: one with
no `task` field is judged by its `answer` (`FILE_ANSWERS`).
"""

import dataclasses
from typing import Callable

from r1jax.data.tasks import answers, arithmetic, countdown, math_answers
from r1jax.data.tasks.splits import HELDOUT, SPLITS, TRAIN, problem_split


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    verify: Callable[[str, dict], bool]
    reward: Callable[[str, dict], float]
    check_example: Callable[[dict], None]  # raises when the example lacks what verify reads
    generate: Callable[..., dict] | None = None  # (seed, index, **knobs) -> example; None for files
    # completion -> its final answer's vote in cons@k; None: answers.answer_key (canonical text)
    answer_key: Callable[[str], str | None] | None = None
    # completion -> it checks or revises an earlier step (arithmetic: recomputes its steps after
    # "check"; Countdown: rejects an attempt and tries again); None: no such notion. Counted (the
    # share of responses that check or revise), never rewarded.
    revises: Callable[[str], bool] | None = None


TASKS: dict[str, Task] = {
    arithmetic.TASK: Task(arithmetic.TASK, arithmetic.verify, arithmetic.reward,
                          arithmetic.check_example, arithmetic.generate,
                          revises=arithmetic.revises),
    countdown.TASK: Task(countdown.TASK, countdown.verify, countdown.reward,
                         countdown.check_example, countdown.generate, revises=countdown.revises),
    # Read from data files (GSM8K, MATH and mapped layouts), judged with math-verify.
    math_answers.TASK: Task(math_answers.TASK, math_answers.verify, math_answers.reward,
                            math_answers.check_example, answer_key=math_answers.answer_key),
}


def _answer_reward(completion, example: dict) -> float:
    return float(answers.verify_gold_answer(completion, example))


# Records of a user's data set (prompt + answer) that name no task: the final answer must equal
# the record's `answer` in value.
FILE_ANSWERS = Task("answer", answers.verify_gold_answer, _answer_reward, answers.check_gold_answer)


def task_of(example: dict) -> Task:
    """The task that judges `example`: its `task` field, or FILE_ANSWERS when it has none."""
    name = example.get("task")
    if name is None:
        return FILE_ANSWERS
    if name not in TASKS:
        raise ValueError(f"example task={name!r} has no verifier; known tasks: {sorted(TASKS)} "
                         "(drop the field to judge the record by its 'answer')")
    return TASKS[name]


def generate(task: str, seed: int, index: int, **kwargs) -> dict:
    """Example `index` of `task`'s stream `seed`; kwargs are the task's difficulty knobs."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is unknown; choose one of {sorted(TASKS)}")
    if TASKS[task].generate is None:
        generated = sorted(name for name, t in TASKS.items() if t.generate is not None)
        raise ValueError(f"task={task!r} is not generated: its examples come from a data file "
                         f"(give the file's path instead); generated tasks: {generated}")
    return TASKS[task].generate(seed, index, **kwargs)


__all__ = ["FILE_ANSWERS", "HELDOUT", "SPLITS", "TASKS", "TRAIN", "Task", "answers", "arithmetic",
           "countdown", "generate", "math_answers", "problem_split", "task_of"]
