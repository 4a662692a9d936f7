"""Deterministic per-example randomness and problem-level train/held-out splits.

Every example is a pure function of (seed, index), so a grain MapDataset can fetch any index in
any order (shuffling, sharding, resuming from a checkpoint) and always get the same example.

The split is decided by a hash of the *problem* (not of the index or the seed), so the held-out
set never shares a problem with the train set, whatever seeds produced either of them.
"""

import hashlib
import random
from typing import Callable

TRAIN = "train"
HELDOUT = "heldout"
SPLITS = (TRAIN, HELDOUT)

# Rejection sampling needs about 100 / heldout_percent attempts for a held-out example; this bound
# only trips when a difficulty setting leaves (almost) no problem in the requested split.
_MAX_ATTEMPTS = 10_000


def example_rng(seed: int, index: int, attempt: int = 0) -> random.Random:
    """A private generator for one example; string seeds are hashed with sha512, so stable."""
    return random.Random(f"r1jax:{seed}:{index}:{attempt}")


def problem_split(problem_key: str, heldout_percent: int = 10) -> str:
    """`HELDOUT` for a stable `heldout_percent`% of problems, `TRAIN` for the rest."""
    bucket = int.from_bytes(hashlib.sha256(problem_key.encode()).digest()[:8], "big") % 100
    return HELDOUT if bucket < heldout_percent else TRAIN


def check_split(split: str, heldout_percent: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}")
    if not 0 < heldout_percent < 100:
        raise ValueError(f"heldout_percent={heldout_percent} must be in 1..99 so both splits exist")


def sample_in_split(
    make_problem: Callable[[random.Random], dict],
    problem_key: Callable[[dict], str],
    *,
    seed: int,
    index: int,
    split: str,
    heldout_percent: int,
) -> tuple[dict, random.Random]:
    """Draws problems for (seed, index) until one falls in `split`; returns it and its generator.

    The generator is returned so the caller can draw the rest of the example (search order,
    distractors, noise) from the same deterministic stream.
    """
    check_split(split, heldout_percent)
    for attempt in range(_MAX_ATTEMPTS):
        rng = example_rng(seed, index, attempt)
        problem = make_problem(rng)
        if problem_split(problem_key(problem), heldout_percent) == split:
            return problem, rng
    raise RuntimeError(
        f"no {split!r} problem found in {_MAX_ATTEMPTS} draws (seed={seed}, index={index}); "
        "the difficulty settings leave too few distinct problems: widen the number range or digits"
    )
