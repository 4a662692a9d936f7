"""Rule-based rewards: tricky answers, adversarial Countdown expressions, format, language."""

import functools
import time

import numpy as np
import pytest

from r1jax.rl import rewards


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
def test_accuracy_reward_table(completion, gold, expected):
    got = rewards.accuracy_reward(["q"], [completion], answer=[gold])
    assert got.dtype == np.float32 and got.shape == (1,)
    assert got[0] == expected


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


@pytest.mark.parametrize("completion,expected", COUNTDOWN_CASES)
def test_countdown_reward_table(completion, expected):
    got = rewards.countdown_reward(["q"], [completion], numbers=[NUMBERS], target=[TARGET])
    assert got[0] == pytest.approx(expected)


def test_countdown_division():
    cases = [(_answer("5/(12-12)"), [12, 12, 5], 7, 0.1),  # division by zero
             (_answer("(12+3)/5"), [12, 3, 5], 3, 1.0),
             (_answer("12/(3*5)"), [12, 3, 5], 1, 0.1)]  # 4/5 is exact, not rounded to 1
    for completion, numbers, target, expected in cases:
        got = rewards.countdown_reward(None, [completion], numbers=[numbers], target=[target])
        assert got[0] == pytest.approx(expected), completion


def test_adversarial_inputs_are_fast():
    nasty = ["<answer>" + "(" * 100_000 + "</answer>", "\\boxed{" * 50_000, "<answer>" * 50_000,
             _answer("9" * 100_000), _answer("2**" * 1000 + "2"), "<think>" + "é中" * 100_000,
             _answer("\\boxed{" * 2000 + "1" + "}" * 2000), "\\boxed{" * 2000 + "1" + "}" * 2000,
             _answer("\\frac{" * 2000 + "1" * 4000), _answer("(2**10000)*" * 90 + "1")]
    start = time.perf_counter()
    for fn in (rewards.accuracy_reward, rewards.format_reward, rewards.language_consistency_reward):
        fn(None, nasty, answer=["1"] * len(nasty))
    rewards.countdown_reward(None, nasty, numbers=[NUMBERS] * len(nasty), target=[TARGET] * len(nasty))
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
    assert rewards.format_reward(None, [completion])[0] == expected


def test_language_consistency():
    completions = ["<think> add the units then carry </think>",
                   "<think> add the 单位 then перенос </think> <answer> 5 </answer>",
                   "<think> 1+2+0=3 </think>",  # numbers only: nothing inconsistent
                   "<think> café naïve </think>"]  # accented Latin is Latin
    np.testing.assert_allclose(rewards.language_consistency_reward(None, completions), [1, 0.6, 1, 1])
    russian = functools.partial(rewards.language_consistency_reward, script="cyrillic")
    assert russian(None, ["<think> сложить и перенести units </think>"])[0] == pytest.approx(0.75)


def test_combine_rewards_weights_and_fields():
    combined = rewards.combine_rewards([(rewards.accuracy_reward, 1.0), (rewards.format_reward, 0.5)])
    completions = [_answer("4"), "<answer> 4 </answer>", _answer("5"), ""]
    got = combined(["q"] * 4, completions, answer=["4"] * 4, numbers=[None] * 4)
    np.testing.assert_allclose(got, [1.5, 1.0, 0.5, 0.0])
    assert got.dtype == np.float32
    with pytest.raises(KeyError, match="needs the field 'answer'"):
        combined(["q"], ["x"])
    with pytest.raises(ValueError, match="has 2 values for 1 completions"):
        rewards.accuracy_reward(["q"], ["x"], answer=["1", "2"])
    with pytest.raises(ValueError, match="at least one"):
        rewards.combine_rewards([])
    with pytest.raises(TypeError, match="reward_fn, weight"):
        rewards.combine_rewards([(rewards.format_reward, "1")])


def test_safe_evaluator_refuses_non_arithmetic():
    for text in ["__import__('os')", "a+1", "[1]", "'1'", "True+1", "1 if 1 else 2", "(1).real", "f(1)"]:
        with pytest.raises(rewards.UnsafeExpression):
            rewards.evaluate_expression(text)
    value, literals = rewards.evaluate_expression("(1+2)/3*0.5")
    assert value == rewards.Fraction(1, 2) and literals == [1, 2, 3, rewards.Fraction(1, 2)]
