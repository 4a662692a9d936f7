"""Synthetic verifiable tasks, generated deterministically from (seed, index).

Each example is a dict with `task`, `prompt`, `reasoning`, `answer` (strings) and `noisy` (the
trace was corrupted on purpose), plus task fields: `op`, `a`, `b` for arithmetic; `numbers`,
`target` for countdown. The same dict serves pretraining (the full worked text), SFT (prompt ->
completion) and RL (prompt + the fields the reward needs).
"""

from typing import Callable

from r1jax.data.tasks import arithmetic, countdown
from r1jax.data.tasks.splits import HELDOUT, SPLITS, TRAIN, problem_split

GENERATORS: dict[str, Callable[..., dict]] = {
    arithmetic.TASK: arithmetic.generate,
    countdown.TASK: countdown.generate,
}


def generate(task: str, seed: int, index: int, **kwargs) -> dict:
    """Example `index` of `task`'s stream `seed`; kwargs are the task's difficulty knobs."""
    if task not in GENERATORS:
        raise ValueError(f"task={task!r} is unknown; choose one of {sorted(GENERATORS)}")
    return GENERATORS[task](seed, index, **kwargs)


__all__ = ["GENERATORS", "HELDOUT", "SPLITS", "TRAIN", "arithmetic", "countdown", "generate",
           "problem_split"]
