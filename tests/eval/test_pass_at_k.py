"""pass@k vs brute-force enumeration, cons@k ties and normalisation, markdown tables."""

import itertools
from fractions import Fraction

import pytest

from r1jax.eval import (
    cons_at_k,
    format_table,
    majority_vote,
    pass_at_1,
    pass_at_k,
    pass_at_k_estimator,
)


def brute_force_pass_at_k(outcomes, k):
    """Exact fraction of the k-subsets of the samples that contain a correct one."""
    subsets = list(itertools.combinations(outcomes, k))
    return Fraction(sum(any(s) for s in subsets), len(subsets))


@pytest.mark.parametrize("num_samples", [1, 2, 5, 8])
def test_estimator_matches_enumeration(num_samples):
    for num_correct in range(num_samples + 1):
        outcomes = [True] * num_correct + [False] * (num_samples - num_correct)
        for k in range(1, num_samples + 1):
            want = brute_force_pass_at_k(outcomes, k)
            got = pass_at_k_estimator(num_samples, num_correct, k)
            # The product form is exact up to float64 rounding of at most n factors.
            assert got == pytest.approx(float(want), rel=1e-12, abs=1e-15), (num_correct, k)


def test_estimator_is_stable_for_many_samples():
    # C(1000, 64) overflows float64; the product form does not form it. Closed form for c=1: k/n.
    assert pass_at_k_estimator(1000, 1, 64) == pytest.approx(64 / 1000, rel=1e-12)
    assert pass_at_k_estimator(1000, 0, 64) == 0.0
    assert pass_at_k_estimator(1000, 937, 64) == 1.0  # n - c = 63 < k


def test_pass_at_k_averages_problems_with_their_own_sample_counts():
    correct = [[True, False, False, True], [False, False], [True, True, True]]
    want = sum(float(brute_force_pass_at_k(row, 2)) for row in correct) / 3
    assert pass_at_k(correct, 2) == pytest.approx(want, rel=1e-12)
    # pass@1 is the plain per-problem mean of p_i, then the mean over problems [S5 §3].
    assert pass_at_1(correct) == pytest.approx((2 / 4 + 0 / 2 + 3 / 3) / 3, rel=1e-12)
    assert pass_at_1(correct) == pytest.approx(pass_at_k(correct, 1), rel=1e-12)


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="k=5"):
        pass_at_k_estimator(4, 1, 5)
    with pytest.raises(ValueError, match="num_correct=5"):
        pass_at_k_estimator(4, 5, 1)
    with pytest.raises(ValueError, match="problem 1 has no samples"):
        pass_at_1([[True], []])


def test_majority_vote_breaks_ties_by_first_occurrence():
    assert majority_vote(["4", "5", "5", "4"]) == "4"
    assert majority_vote(["5", "4", "4", "5"]) == "5"
    assert majority_vote(["7", "5", "4", "4", "5"]) == "5"  # 5 and 4 tie at 2; 5 seen first
    assert majority_vote(["3", "4", "4"]) == "4"  # a strict majority wins whatever the order
    assert majority_vote([None, "2", None, None]) == "2"  # unparsed answers do not vote
    assert majority_vote([None, None]) is None


def normalize(answer):
    """A toy normaliser: strip spaces and canonicalise numbers ("4.0" == "4")."""
    text = answer.replace(" ", "")
    try:
        return float(text)
    except ValueError:
        return text


def test_cons_at_k_normalizes_before_voting_and_comparing():
    answers = [
        [" 4", "4.0", "5", "5"],  # 4 and 4.0 are one answer: 2 votes, tie with 5, 4 first: right
        ["x+1", "x + 1", "2", None],  # right after normalisation
        ["3", "2", "2", "3"],  # 3 first in the tie: wrong
        [None, None, None, None],  # nothing parsed: wrong
    ]
    references = ["4", "x+1", "2", "1"]
    assert cons_at_k(answers, references, normalize=normalize) == 0.5
    # Without normalisation, problem 0 votes "5" (2 votes vs 1 each) and problem 1 "x+1" (first).
    assert cons_at_k(answers, references) == 0.25
    # The first k samples only: problem 2 then has "3" alone.
    assert cons_at_k(answers, references, k=1, normalize=normalize) == 0.5
    with pytest.raises(ValueError, match="fewer than k=5"):
        cons_at_k(answers, references, k=5)
    with pytest.raises(ValueError, match="len\\(references\\)=3"):
        cons_at_k(answers, references[:3])


def test_format_table():
    rows = [
        {"model": "R1-Zero", "AIME24": 71.0, "MATH-500": 95.9},
        {"model": "o1|mini", "AIME24": 63.6},
    ]
    got = format_table(rows, ["model", "AIME24", "MATH-500"])
    assert got == (
        "| model | AIME24 | MATH-500 |\n"
        "| --- | ---: | ---: |\n"
        "| R1-Zero | 71.0 | 95.9 |\n"
        "| o1\\|mini | 63.6 |  |\n"
    )
    assert format_table([{"n": 3, "p": 0.12345}], ["n", "p"], float_format="{:.3f}") == (
        "| n | p |\n| ---: | ---: |\n| 3 | 0.123 |\n"
    )
    with pytest.raises(ValueError, match="columns is empty"):
        format_table(rows, [])
