r"""The `math` task's verifier (math-verify) on reference / model answer pairs, through the one
scoring path (`score`), and its time limit on answers that would make sympy run for minutes."""

import time

import pytest

from r1jax.data import chat, tasks
from r1jax.data.tasks import math_answers
from r1jax.rollout import scoring

# (reference answer, the model's final answer, equivalent?)
PAIRS = [
    # GSM8K-style numbers: thousands separators, dollar signs, trailing text and periods
    ("72", "72", True),
    ("1234", "1,234", True),
    ("1,234", "1234", True),
    ("18", "$18", True),
    ("18", r"\$18", True),
    ("18", r"\$18.00", True),
    ("1234", r"\$1,234", True),
    ("5", "The answer is 5.", True),
    ("1000", "1{,}000", True),
    ("1000", "10^3", True),
    ("81", "9**2", True),  # a Python power is not LaTeX, where 9**2 would read as 9
    ("9", "9**2", False),
    ("-5", "-5", True),
    ("72", "27", False),
    ("18", "The answer is 81", False),
    ("1234", "123", False),
    # fractions, decimals, LaTeX fractions
    (r"\frac{1}{2}", "0.5", True),
    ("0.5", "1/2", True),
    (r"\frac{1}{2}", r"\frac12", True),
    (r"\frac{1}{2}", r"\dfrac{1}{2}", True),
    (r"\frac{1}{3}", "0.3333333", True),
    (r"\frac{1}{3}", "0.33", False),
    (r"\frac{1}{2}", r"\frac{2}{3}", False),
    (r"\frac{\sqrt{3}}{2}", r"\sqrt{3}/2", True),
    (r"2\sqrt{3}", r"\sqrt{12}", True),
    ("2", r"2\sqrt{3}", False),
    (r"3\pi", r"3\pi", True),
    (r"\pi", "3", False),
    # \boxed{} inside the final answer, nested braces
    (r"\frac{1}{2}", r"\boxed{\frac{1}{2}}", True),
    (r"\frac{1}{2}", r"\boxed{\frac{1}{3}}", False),
    # percentages
    (r"50\%", "0.5", True),
    (r"50\%", "50", True),
    ("0.5", r"50\%", True),
    (r"50\%", "5", False),
    # units and text around the answer
    ("10", r"10\text{ cm}", True),
    ("10", "10 cm", True),
    ("18", r"18\text{ dollars}", True),
    ("18", "18 dollars", True),  # as LaTeX the letters would multiply as variables
    ("1234", "total: 1,234 dollars", True),
    ("0.5", "The answer is 1/2", True),
    (r"\frac{1}{2}", r"\frac{1}{2} cup", True),
    ("10", r"11\text{ cm}", False),
    # equations, intervals, sets
    ("3", "x=3", True),
    ("x=3", "3", True),
    ("3", "x=4", False),
    ("[1,2)", "[1, 2)", True),
    ("(1,2)", "(1,2]", False),
    ("(1,2)", "(1, 2)", True),
    ("2", "1, 2", False),
    (r"(-\infty,3]", r"(-\infty, 3]", True),
    (r"\{1,2\}", r"\{2, 1\}", True),
    (r"\{1,2\}", r"\{1, 3\}", False),
    # multiple choice
    (r"\text{(A)}", "A", True),
    (r"\text{(A)}", "B", False),
    # no number at all, or nothing
    ("7", "I do not know", False),
    ("7", "", False),
]


@pytest.mark.parametrize("reference, predicted, same", PAIRS)
def test_math_verify_equivalence_table(reference, predicted, same):
    assert math_answers.equivalent(reference, predicted) is same


def test_the_table_has_both_verdicts_in_numbers():
    assert sum(same for *_, same in PAIRS) >= 30 and sum(not same for *_, same in PAIRS) >= 15


def _example(answer: str) -> dict:
    return {"task": "math", "prompt": "Natalia sold 48 clips ...", "answer": answer}


def test_completions_are_scored_through_score():
    completions = [
        chat.format_completion("48/2 = 24, 48 + 24 = 72", "72"),
        chat.format_completion("48 + 24", r"\$72"),
        " <think> so the total is </think> The answer is $\\boxed{72}$.",  # \boxed, no tags
        chat.format_completion("48 + 12", "60"),
        " <think> 72 </think> no answer here",  # no <answer>, no \boxed: nothing to judge
    ]
    got = scoring.score(completions, [_example("72")] * 5, (("accuracy", 1.0), ("format", 1.0)))
    assert got.correct.tolist() == [True, True, True, False, False]
    assert got.parts["accuracy"].tolist() == [1, 1, 1, 0, 0]
    assert got.formatted.tolist() == [True, True, False, True, False]
    assert not got.errors.any()
    assert tasks.task_of(_example("72")) is tasks.TASKS["math"]


def test_an_example_without_a_reference_is_a_data_error():
    with pytest.raises(KeyError, match="a math example needs a non-empty reference 'answer'"):
        scoring.score(["<answer> 1 </answer>"], [{"task": "math", "prompt": "p", "answer": " "}])


def test_the_math_task_is_not_generated():
    with pytest.raises(ValueError, match="task='math' is not generated: its examples come from"):
        tasks.generate("math", 0, 0)


def test_an_answer_longer_than_the_cap_is_not_parsed():
    long_answer = "1+" * math_answers.MAX_ANSWER_CHARS + "1"
    assert math_answers.parse_answer(long_answer) == []
    assert not math_answers.equivalent(str(math_answers.MAX_ANSWER_CHARS + 1), long_answer)


def test_a_latex_power_tower_read_left_to_right_scores_zero_at_once():
    """LaTeX groups `9^9^9^9` as ((9^9)^9)^9 = 9^729: no stall, just a wrong answer (the
    Python `9**9**9**9` groups to the right and is cut off below)."""
    math_answers.math_verify()
    assert math_answers.equivalent("8", "2^3")  # a process's first LaTeX power costs ~0.3 s once
    start = time.perf_counter()
    got = scoring.score([chat.format_completion("", "9^9^9^9")], [_example("5")],
                        time_limit_s=0.5)
    assert time.perf_counter() - start < 1
    assert got.correct.tolist() == [False] and not got.errors.any()


PATHOLOGICAL = [
    "9**9**9**9",
    r"9^{9^{9^{9}}}",
    r"\boxed{99999999999^{99999999999}}",
    r"(1+x)^{1000}",
    r"2^{2^{2^{2^{2^{2}}}}}",
    "(" * 30 + "1" + ")" * 30,
]


# An alarm that lands in jax's gc callback is printed and dropped by Python (then it repeats).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("answer", PATHOLOGICAL)
def test_a_pathological_answer_is_cut_off_at_the_limit_and_counted(answer):
    """Without a limit each of these runs for 6 s to minutes inside sympy; the per-completion
    limit stops it even though math-verify's `except Exception` blocks sit in between, and the
    completion scores 0 as an error, while the next one is judged as usual."""
    completions = [chat.format_completion("", answer), chat.format_completion("", "5")]
    math_answers.math_verify()  # imported and warmed up once per process, before any limit runs
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="JudgeTimeout"):
        got = scoring.score(completions, [_example("5")] * 2, (("accuracy", 1.0),),
                            time_limit_s=0.5)
    assert time.perf_counter() - start < 3
    assert got.errors.tolist() == [True, False]
    assert got.correct.tolist() == [False, True]
    assert got.reward.tolist() == [0.0, 1.0]


def test_math_verify_does_not_arm_its_own_alarm(monkeypatch):
    """Its signal.alarm would replace score's timer and cancel it on return."""
    import signal

    def no_alarm(seconds):
        raise AssertionError(f"signal.alarm({seconds}) armed while judging")

    monkeypatch.setattr(signal, "alarm", no_alarm)
    assert math_answers.equivalent(r"\frac{1}{2}", "0.5")


def test_notations_of_one_answer_cast_one_vote():
    answers = (r"\$10", "10", "10.0", r"\boxed{10}", "12", r"\frac{1}{2}", "0.5", r"\text{yes}")
    completions = [chat.format_completion("", a) for a in answers]
    completions.append(" <think> no answer </think>")
    got = scoring.score(completions, [_example("10")] * len(completions))
    assert got.keys[:4] == ["10"] * 4
    assert got.keys[4:] == ["12", "1/2", "1/2", "yes", None]
    assert got.correct.tolist() == [True] * 4 + [False] * 5
