"""Verifiers and rewards: tricky answers, adversarial Countdown expressions, format, language."""

import time
from fractions import Fraction

import numpy as np
import pytest

from r1jax.data.tasks import FILE_ANSWERS, answers, countdown, task_of
from r1jax.rollout import scoring


def _answer(text):
    return f"<think> work </think> <answer> {text} </answer>"


HUGE = "9" * 5000  # beyond Python's 4300-digit int() limit: must not crash

# (completion, gold answer, expected accuracy reward)
ACCURACY_CASES = [
    (_answer("42"), "42", 1.0),
    (_answer("41"), "42", 0.0),
    ("so \\boxed{1/2}", "0.5", 1.0),
    ("\\boxed{\\frac{1}{2}}", "1/2", 1.0),
    ("\\boxed{\\frac{\\frac{1}{2}}{3}}", "1/6", 1.0),  # nested braces
    ("\\boxed{{1}/{2}}", "0.5", 1.0),
    ("\\boxed {0.50}", "1/2", 1.0),
    ("\\boxed{1/2", "0.5", 0.0),  # unbalanced braces: no answer
    (_answer("\\boxed{12}"), "12", 1.0),
    ("<answer> 3 </answer> then more words <answer> 4 </answer> trailing", "4", 1.0),  # the last one wins
    (_answer("The answer is 4"), "4", 0.0),  # extra words inside the answer are not forgiven
    (_answer("x = 4"), "4", 1.0),
    (_answer("1,234,567"), "1234567", 1.0),
    (_answer("$-3$"), "-3", 1.0),
    (_answer("2^10"), "1024", 1.0),
    (_answer("0.1+0.2"), "0.3", 1.0),  # exact decimals, no float rounding
    (_answer("1e400"), "1" + "0" * 400, 1.0),
    (_answer(HUGE), HUGE, 1.0),
    (_answer(HUGE), HUGE[:-1] + "8", 0.0),
    (_answer("1e999999999"), "1", 0.0),  # refused, not computed
    (_answer("9**9**9"), "1", 0.0),
    (_answer("1/0"), "1", 0.0),
    (_answer("__import__('os').system('true')"), "0", 0.0),
    (_answer("((((1+2)"), "3", 0.0),
    ("4", "4", 0.0),  # no tags, no box
    ("<answer> 4", "4", 0.0),  # unclosed
    ("", "4", 0.0),
    (None, "4", 0.0),
    (_answer("yes"), "Yes", 0.0),  # non-numeric answers compare as canonical strings
    (_answer("yes"), "yes", 1.0),
]


@pytest.mark.parametrize("completion,gold,expected", ACCURACY_CASES)
def test_gold_answer_verifier_table(completion, gold, expected):
    for example in ({"answer": gold}, {"answer": gold, "task": "arithmetic"}):
        assert task_of(example).verify(completion, example) is bool(expected)
        assert scoring.REWARDS["accuracy"](completion, example) == expected


NUMBERS, TARGET = [12, 3, 5], 41
COUNTDOWN_CASES = [
    (_answer("(12*3)+5"), 1.0),
    (_answer("12*3+5"), 1.0),
    (_answer("5+3*12"), 1.0),
    (_answer("(12+3)+5"), 0.1),  # each number once, wrong value
    (_answer("12*3+5+5"), 0.1),  # a number used twice
    (_answer("12*3"), 0.1),  # a number unused
    (_answer("12*3+5 = 41"), 0.1),  # '=' is not part of an expression
    (_answer("(12*3)+5.0"), 0.1),  # only integer literals
    (_answer("-(-12*3)+5"), 0.1),  # no unary minus
    (_answer("__import__('os').system('rm -rf /')"), 0.1),
    (_answer("9**9**9"), 0.1),
    (_answer("12**3+5"), 0.1),
    (_answer("((12*3)+5"), 0.1),  # unbalanced parentheses
    (_answer("(" * 150 + "12*3+5" + ")" * 150), 0.1),  # too deep for the parser
    (_answer("12*3" + " " * 10_000 + "+5"), 0.1),  # too long to parse
    (_answer("lambda: 41"), 0.1),
    (_answer("[12, 3, 5]"), 0.1),
    (_answer(""), 0.1),
    ("<think> 12*3=36 </think> 41", 0.0),  # no answer tag
    ("", 0.0),
]


COUNTDOWN = {"task": "countdown", "numbers": NUMBERS, "target": TARGET, "answer": "(12*3)+5"}


@pytest.mark.parametrize("completion,expected", COUNTDOWN_CASES)
def test_countdown_reward_table(completion, expected):
    assert countdown.reward(completion, COUNTDOWN) == pytest.approx(expected)
    assert scoring.REWARDS["accuracy"](completion, COUNTDOWN) == pytest.approx(expected)
    assert countdown.verify(completion, COUNTDOWN) is (expected == 1.0)


@pytest.mark.parametrize("answer", ["41", "41.0", "(12*3)+5 + 0", "36+5", "82/2", "\\boxed{41}"])
def test_countdown_value_equal_answers_that_are_not_solutions(answer):
    """The gold answer is an expression; a completion whose answer merely has the target's value
    (or another expression's) is not a solution, whatever a value comparison would say."""
    completion = _answer(answer)
    # A comparison of values with the gold expression would (wrongly) accept every one of them.
    assert answers.answers_match(answers.extract_answer(completion), COUNTDOWN["answer"])
    assert not countdown.verify(completion, COUNTDOWN)
    assert countdown.reward(completion, COUNTDOWN) < 1.0


def test_countdown_division():
    cases = [(_answer("5/(12-12)"), [12, 12, 5], 7, 0.1),  # division by zero
             (_answer("(12+3)/5"), [12, 3, 5], 3, 1.0),
             (_answer("12/(3*5)"), [12, 3, 5], 1, 0.1)]  # 4/5 is exact, not rounded to 1
    for completion, numbers, target, expected in cases:
        example = {"task": "countdown", "numbers": numbers, "target": target}
        assert countdown.reward(completion, example) == pytest.approx(expected), completion


def test_adversarial_inputs_are_fast():
    nasty = ["<answer>" + "(" * 100_000 + "</answer>", "\\boxed{" * 50_000, "<answer>" * 50_000,
             _answer("9" * 100_000), _answer("2**" * 1000 + "2"), "<think>" + "é中" * 100_000,
             _answer("\\boxed{" * 2000 + "1" + "}" * 2000), "\\boxed{" * 2000 + "1" + "}" * 2000,
             _answer("\\frac{" * 2000 + "1" * 4000), _answer("(2**10000)*" * 90 + "1")]
    start = time.perf_counter()
    scoring.score(nasty, [{"answer": "1"}] * len(nasty), (("accuracy", 1.0), ("format", 1.0),
                                                          ("language", 1.0)))
    scoring.score(nasty, [COUNTDOWN] * len(nasty), (("accuracy", 1.0),))
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("completion,expected", [
    ("<think> a </think> <answer> 1 </answer>", 1.0),
    ("<think>a</think><answer>1</answer>", 1.0),
    ("<think> a </think> text <answer> 1 </answer> more", 1.0),
    ("<answer> 1 </answer> <think> a </think>", 0.0),  # wrong order
    ("<think> a <answer> 1 </answer> </think>", 0.0),  # answer inside think
    ("<think> a </think> <think> b </think> <answer> 1 </answer>", 0.0),  # twice
    ("<think> a </think>", 0.0),
    ("a </think> <answer> 1 </answer>", 0.0),
    ("", 0.0),
])
def test_format_reward_table(completion, expected):
    assert scoring.has_r1_format(completion) is bool(expected)
    assert scoring.REWARDS["format"](completion, {}) == expected


def test_language_consistency():
    completions = ["<think> add the units then carry </think>",
                   "<think> add the 单位 then перенос </think> <answer> 5 </answer>",
                   "<think> 1+2+0=3 </think>",  # numbers only: nothing inconsistent
                   "<think> café naïve </think>"]  # accented Latin is Latin
    np.testing.assert_allclose([scoring.REWARDS["language"](c, {}) for c in completions],
                               [1, 0.6, 1, 1])
    russian = scoring.language_consistency("<think> сложить и перенести units </think>", "cyrillic")
    assert russian == pytest.approx(0.75)


def test_score_weights_rewards_and_judges_with_each_examples_task():
    completions = [_answer("4"), "<answer> 4 </answer>", _answer("5"), "", _answer("(12*3)+5")]
    examples = [{"answer": "4"}] * 4 + [COUNTDOWN]
    got = scoring.score(completions, examples, (("accuracy", 1.0), ("format", 0.5)))
    np.testing.assert_allclose(got.reward, [1.5, 1.0, 0.5, 0.0, 1.5])
    assert got.reward.dtype == np.float32
    assert got.correct.tolist() == [True, True, False, False, True]
    assert got.formatted.tolist() == [True, False, True, False, True]
    assert got.keys == ["4", "4", "5", None, "(12*3)+5"]
    with pytest.raises(KeyError, match="no 'answer'"):
        scoring.score(["x"], [{"prompt": "q"}])
    with pytest.raises(KeyError, match="numbers"):
        scoring.score(["x"], [{"task": "countdown", "target": 3}])
    with pytest.raises(ValueError, match="2 completions for 1 examples"):
        scoring.score(["x", "y"], [{"answer": "1"}])
    with pytest.raises(ValueError, match="unknown rewards \\['acuracy'\\]"):
        scoring.score(["x"], [{"answer": "1"}], (("acuracy", 1.0),))
    with pytest.raises(ValueError, match="task='gsm8k' has no verifier"):
        task_of({"task": "gsm8k", "answer": "1"})
    assert task_of({"answer": "1"}) is FILE_ANSWERS


def test_safe_evaluator_refuses_non_arithmetic():
    for text in ["__import__('os')", "a+1", "[1]", "'1'", "True+1", "1 if 1 else 2", "(1).real", "f(1)"]:
        with pytest.raises(answers.UnsafeExpression):
            answers.evaluate_expression(text)
    value, literals = answers.evaluate_expression("(1+2)/3*0.5")
    assert value == Fraction(1, 2) and literals == [1, 2, 3, Fraction(1, 2)]
