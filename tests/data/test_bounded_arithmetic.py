"""Every value the exact evaluator builds is bounded: literals, sums, products, quotients and
powers whose numerator or denominator would pass the bound are refused before they are computed,
so adversarial answers are judged in milliseconds and are never correct."""

import time
from fractions import Fraction

import pytest

from r1jax.data.tasks import answers, countdown, task_of
from r1jax.rollout import scoring


def _answer(text):
    return f"<think> work </think> <answer> {text} </answer>"


def _chain(op, terms, max_chars=answers.MAX_EXPRESSION_CHARS):
    """As many `terms` (cycled) joined by `op` as fit in max_chars."""
    text = terms[0]
    for i in range(1, 10_000):
        longer = f"{text}{op}{terms[i % len(terms)]}"
        if len(longer) > max_chars:
            return text
        text = longer
    return text


ADVERSARIAL = [
    _chain("*", ["9e9999"]),  # each literal alone is ~33,000 bits
    "(9e9999)/(1e-9999)",
    _chain("*", ["9e4000"]),  # literals under the bound whose products are not
    _chain("/", ["9e4000", "7e-4000"]),
    _chain("+", [f"1/({m}e3100+1)" for m in (3, 7, 9)]),  # coprime denominators
    _chain("*", ["(2**10000)"]),
    "(1e-5000)**-5",
    "(3/7)**30000",
    "2**20001",
    "9" * 4000 + "." + "9" * 3000,  # one literal with a huge mantissa
]


def test_adversarial_arithmetic_is_fast_and_never_correct():
    start = time.perf_counter()
    for text in ADVERSARIAL:
        for gold in ("1", "0"):
            example = {"answer": gold}
            assert not task_of(example).verify(_answer(text), example), text[:40]
        assert answers.answer_value(text) is None, text[:40]
    scores = scoring.score([_answer(t) for t in ADVERSARIAL], [{"answer": "1"}] * len(ADVERSARIAL),
                           (("accuracy", 1.0), ("format", 1.0)))
    assert not scores.correct.any()
    assert time.perf_counter() - start < 2
    # The same bound leaves ordinary values exact.
    assert answers.answer_value("1e400") == 10**400
    assert answers.answer_value("9e2000*9e2000") == 81 * Fraction(10) ** 4000
    assert answers.answer_value("(1e-3000)/(1e-3000)") == 1
    assert answers.answer_value("2**10000") == 2**10000
    assert answers.answer_value("0.1+0.2") == Fraction(3, 10)
    assert countdown.verify(_answer("12*3+5"), {"task": "countdown", "numbers": [12, 3, 5],
                                                "target": 41})


@pytest.mark.parametrize("text,message", [
    ("9" * 6100 + ".5", "too many digits"),
    ("0." + "0" * 7000 + "1", "too many digits"),
    ("1e9999", "too many digits"),
    ("0x1f", "not a decimal number"),
    ("9e4000*9e4000", "Mult result would have up to"),
    ("(1e-4000)/(9e4000)", "Div result would have up to"),
    ("1/3e4000+1/7e4000", "Add result would have up to"),
    ("(9e3000)**10", "power would have up to"),
])
def test_oversized_values_are_refused_before_they_are_built(text, message):
    with pytest.raises(answers.UnsafeExpression, match=message):
        answers.evaluate_expression(text, allow_power=True, max_chars=100_000)
