"""pass@1, unbiased pass@k and cons@k (majority vote): the metrics of the R1 tables [S5 §3].

Inputs are per-problem lists of sample outcomes (host-side Python, not traced): `correct[p][i]`
says whether sample i of problem p was graded correct, `answers[p][i]` is its extracted final
answer (None when none could be parsed).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Sequence

import numpy as np


def _identity(answer):
    return answer


def pass_at_1(correct: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of (1/k) Σ_i p_i, p_i = 1 if sample i is correct [S5 §3].

    R1 samples k responses per problem (temperature 0.6, top-p 0.95) instead of greedy decoding,
    which gives endless repetition and high variance on long chains of thought.
    """
    if len(correct) == 0:
        raise ValueError("correct is empty: need at least one problem")
    per_problem = []
    for p, samples in enumerate(correct):
        if len(samples) == 0:
            raise ValueError(f"problem {p} has no samples")
        per_problem.append(np.mean(np.asarray(samples, dtype=np.float64)))
    return float(np.mean(per_problem))


def pass_at_k_estimator(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k from n samples, c correct: 1 - C(n-c, k) / C(n, k) [Chen et al. 2021, eq. 1].

    The probability that k samples drawn without replacement from the n contain a correct one.
    Computed as 1 - Π_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
    """
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct={num_correct} must be in [0, num_samples={num_samples}]")
    if not 1 <= k <= num_samples:
        raise ValueError(f"k={k} must be in [1, num_samples={num_samples}]: draw more samples")
    if num_samples - num_correct < k:  # every k-subset holds a correct sample
        return 1.0
    i = np.arange(num_samples - num_correct + 1, num_samples + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """Mean over problems of the unbiased pass@k estimator, each problem with its own n."""
    if len(correct) == 0:
        raise ValueError("correct is empty: need at least one problem")
    return float(
        np.mean([pass_at_k_estimator(len(s), int(np.sum(np.asarray(s, bool))), k) for s in correct])
    )


def majority_vote(
    answers: Sequence[Hashable | None], normalize: Callable[[Hashable], Hashable] = _identity
) -> Hashable | None:
    """The most frequent normalised answer, or None if no sample produced one.

    Unparsed answers (None) do not vote. Ties go to the answer whose first occurrence comes
    earliest in sample order: deterministic, independent of hashing, and unbiased between answers
    because the samples are i.i.d.
    """
    counts: collections.Counter = collections.Counter()
    first_seen: dict = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = normalize(answer)
        counts[key] += 1
        first_seen.setdefault(key, i)
    if not counts:
        return None
    return min(counts, key=lambda key: (-counts[key], first_seen[key]))


def cons_at_k(
    answers: Sequence[Sequence[Hashable | None]],
    references: Sequence[Hashable],
    *,
    k: int | None = None,
    normalize: Callable[[Hashable], Hashable] = _identity,
) -> float:
    """Fraction of problems whose majority answer over the first k samples is correct [S5 §3].

    Answers and references are compared after `normalize` (e.g. strip spaces, canonicalise
    numbers); k=None uses every sample. R1 reports cons@64 on AIME (cons@16 in the Nature figure).
    """
    if len(answers) != len(references):
        raise ValueError(f"len(answers)={len(answers)} != len(references)={len(references)}")
    if len(answers) == 0:
        raise ValueError("answers is empty: need at least one problem")
    hits = []
    for p, (samples, reference) in enumerate(zip(answers, references)):
        if k is not None and len(samples) < k:
            raise ValueError(f"problem {p} has {len(samples)} samples, fewer than k={k}")
        vote = majority_vote(samples if k is None else samples[:k], normalize)
        hits.append(vote is not None and vote == normalize(reference))
    return float(np.mean(hits))


def cons_at_k_verified(keys: Sequence[Sequence[Hashable | None]],
                       correct: Sequence[Sequence[bool]], *, k: int | None = None) -> float:
    """cons@k judged by a verifier: the samples vote with their canonical answers (`keys`, None
    does not vote) and a problem counts when the winning answer was judged correct.

    For tasks with many right answers (a Countdown expression) there is no single reference to
    compare the vote with, so the vote is judged by the verdict of a sample that gave it: every
    sample with the same canonical answer gets the same verdict.
    """
    if len(keys) != len(correct):
        raise ValueError(f"len(keys)={len(keys)} != len(correct)={len(correct)}")
    if len(keys) == 0:
        raise ValueError("keys is empty: need at least one problem")
    hits = []
    for p, (votes, verdicts) in enumerate(zip(keys, correct)):
        if len(votes) != len(verdicts):
            raise ValueError(f"problem {p} has {len(votes)} answers and {len(verdicts)} verdicts")
        if k is not None and len(votes) < k:
            raise ValueError(f"problem {p} has {len(votes)} samples, fewer than k={k}")
        votes, verdicts = (votes, verdicts) if k is None else (votes[:k], verdicts[:k])
        winner = majority_vote(votes)
        hits.append(winner is not None and bool(verdicts[list(votes).index(winner)]))
    return float(np.mean(hits))
