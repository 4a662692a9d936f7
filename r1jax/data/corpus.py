"""The embedded pretraining corpus: worked solutions of the synthetic tasks, some of them wrong.

A randomly initialised tiny model cannot start R1-Zero from nothing: GRPO only learns when a
group of samples has reward variance, so the starting policy must already succeed sometimes
(REFERENCE §5.2). Pretraining on this corpus teaches the template and the scratchpads; the
`noise_rate` fraction of documents carries a planted slip and a wrong final answer, so the
pretrained policy is right only part of the time and RL has something to improve.

Only train-split problems appear here, so held-out evaluation measures generalisation.
Everything is a function of (seed, index); nothing is downloaded.
"""

import random
from typing import Iterator, Mapping, Sequence

from r1jax.data import chat, tasks

DEFAULT_TASKS = ("arithmetic", "countdown")


def corpus_example(
    seed: int, index: int, *, task_names: Sequence[str] = DEFAULT_TASKS, noise_rate: float = 0.3,
    task_kwargs: Mapping[str, dict] | None = None,
) -> dict:
    """Document `index` of corpus `seed` as a task example (its `noisy` field says if corrupted)."""
    if not task_names:
        raise ValueError("task_names is empty; name at least one of " + str(sorted(tasks.TASKS)))
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate={noise_rate} must be in [0, 1]")
    rng = random.Random(f"r1jax-corpus:{seed}:{index}")
    task = task_names[rng.randrange(len(task_names))]
    noisy = rng.random() < noise_rate
    kwargs = dict((task_kwargs or {}).get(task, {}))
    return tasks.generate(task, seed, index, split=tasks.TRAIN, noisy=noisy, **kwargs)


def corpus_document(seed: int, index: int, *, system: str = chat.SHORT_SYSTEM, **kwargs) -> str:
    """Document `index` as text: templated prompt followed by its worked completion."""
    return chat.format_example(corpus_example(seed, index, **kwargs), system)


def pretraining_documents(seed: int, num_documents: int, **kwargs) -> Iterator[str]:
    """The first `num_documents` documents of corpus `seed` (kwargs as in `corpus_example`)."""
    for index in range(num_documents):
        yield corpus_document(seed, index, **kwargs)
