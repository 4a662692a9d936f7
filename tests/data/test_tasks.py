"""The synthetic tasks: deterministic, split-disjoint, and correct by their own verifiers."""

import numpy as np
import pytest

from r1jax.data import chat, corpus, tasks
from r1jax.data.tasks import arithmetic, countdown, task_of
from r1jax.rollout.scoring import has_r1_format

N = 300
SETTINGS = [
    ("arithmetic", {}),
    ("arithmetic", {"ops": ("+", "*"), "min_digits": 2, "max_digits": 4}),
    ("countdown", {}),
    ("countdown", {"n_numbers": 4, "high": 25}),
]


@pytest.mark.parametrize("task,kwargs", SETTINGS)
def test_same_seed_same_examples_other_seed_other_examples(task, kwargs):
    first = [tasks.generate(task, 7, i, **kwargs) for i in range(50)]
    again = [tasks.generate(task, 7, i, **kwargs) for i in reversed(range(50))][::-1]
    other = [tasks.generate(task, 8, i, **kwargs) for i in range(50)]
    assert first == again  # random access: order of generation does not matter
    assert first != other


@pytest.mark.parametrize("task,kwargs", SETTINGS)
def test_train_and_heldout_share_no_problem(task, kwargs):
    key = {"arithmetic": lambda e: arithmetic.problem_key(e),
           "countdown": lambda e: countdown.problem_key(e)}[task]
    train = {key(tasks.generate(task, seed, i, split="train", **kwargs)) for seed in (0, 1) for i in range(N)}
    heldout = {key(tasks.generate(task, 5, i, split="heldout", **kwargs)) for i in range(N // 3)}
    assert train and heldout
    assert not train & heldout
    assert all(tasks.problem_split(k) == tasks.HELDOUT for k in heldout)


@pytest.mark.parametrize("task,kwargs", SETTINGS)
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_clean_examples_earn_full_reward(task, kwargs, split):
    examples = [tasks.generate(task, 3, i, split=split, **kwargs) for i in range(N // 3)]
    completions = [chat.format_completion(e["reasoning"], e["answer"]) for e in examples]
    assert all(has_r1_format(c) for c in completions)
    assert all(task_of(e).verify(c, e) and task_of(e).reward(c, e) == 1.0
               for c, e in zip(completions, examples))
    if task == "arithmetic":
        assert all(int(e["answer"]) == arithmetic.solve(e["op"], e["a"], e["b"]) for e in examples)
    assert not any(e["noisy"] for e in examples)


@pytest.mark.parametrize("task,kwargs", SETTINGS)
def test_noisy_examples_are_well_formed_but_wrong(task, kwargs):
    examples = [tasks.generate(task, 3, i, noisy=True, **kwargs) for i in range(N // 3)]
    noisy = [e for e in examples if e["noisy"]]
    assert len(noisy) > 0.8 * len(examples)  # a multiplication slip on a skipped 0 digit is a no-op
    completions = [chat.format_completion(e["reasoning"], e["answer"]) for e in noisy]
    assert all(has_r1_format(c) for c in completions)
    assert not any(task_of(e).verify(c, e) for c, e in zip(completions, noisy))
    if task == "countdown":
        # Every number once, target missed: TinyZero's format score.
        assert all(countdown.reward(c, e) == countdown.FORMAT_SCORE for c, e in zip(completions, noisy))
    else:
        assert all(int(e["answer"]) != arithmetic.solve(e["op"], e["a"], e["b"]) for e in noisy)


def test_addition_scratchpad_columns():
    assert arithmetic.addition_trace(482, 79) == ("2+9+0=11 8+7+1=16 4+0+1=5", 561)
    assert arithmetic.addition_trace(95, 7) == ("5+7+0=12 9+0+1=10", 102)
    assert arithmetic.multiplication_trace(482, 37) == ("482*7=3374 482*30=14460 3374+14460=17834", 17834)


def test_countdown_trace_ends_with_the_hit_and_lists_all_numbers():
    for i in range(100):
        e = tasks.generate("countdown", 0, i)
        assert e["reasoning"].endswith(" yes") and e["reasoning"].count("yes") == 1
        assert e["prompt"] == f"Use {' '.join(map(str, e['numbers']))} to make {e['target']}."
        assert 1 <= e["target"] <= 100


def test_countdown_revision_is_a_rejected_attempt_followed_by_another():
    revising = "<think> 12+5=17 17+3=20 no; 12*3=36 36+5=41 yes </think> <answer> (12*3)+5 </answer>"
    assert countdown.revises(revising)
    assert not countdown.revises("<think> 12*3=36 36+5=41 yes </think> <answer> (12*3)+5 </answer>")
    # "no" at the very end of the reasoning revises nothing; "no" after </think> is not reasoning
    assert not countdown.revises("<think> 12+5=17 17+3=20 no </think> <answer> 1 </answer>")
    assert not countdown.revises("<think> 1+2=3 yes </think> <answer> no; 1 </answer>")
    assert not countdown.revises("<think> 3+4=7 nono;x yes </think>")  # not the word "no"
    assert countdown.revises("12+5=17 no; 12*3=36")  # unclosed reasoning is still reasoning
    assert not countdown.revises(None)
    # Generated traces revise exactly when they hold a missed attempt before the hit.
    for i in range(50):
        e = tasks.generate("countdown", 0, i, max_failed_attempts=3)
        assert countdown.revises(f"<think> {e['reasoning']} </think>") == (" no;" in e["reasoning"])


def test_a_checked_trace_guesses_then_works_the_steps_out():
    for i in range(200):
        noisy = i % 2 == 0
        plain = tasks.generate("arithmetic", 0, i, max_digits=2, noisy=noisy)
        e = tasks.generate("arithmetic", 0, i, max_digits=2, check_rate=0.5, noisy=noisy)
        assert e["prompt"] == plain["prompt"]  # the knob changes traces only
        glance = e["reasoning"].split()[1]  # carries forgotten, the slip planted when noisy
        clean_glance = str(arithmetic.addition_trace(e["a"], e["b"], forget_carries=True)[1])
        assert (glance == clean_glance) == (not plain["noisy"])
        guess = f"guess {glance}"
        if e["reasoning"] == guess:  # unchecked: the guess is the answer
            assert e["answer"] == glance and e["noisy"] == (glance != str(e["a"] + e["b"]))
            assert not arithmetic.revises(f"<think> {e['reasoning']} </think>")
            continue
        verdict = "ok" if glance == str(e["a"] + e["b"]) else "no"
        steps = arithmetic.addition_trace(e["a"], e["b"])[0]  # no slip in the check
        assert e["reasoning"] == f"{guess} check {steps} {verdict}"
        assert e["answer"] == str(e["a"] + e["b"]) and not e["noisy"]
        assert arithmetic.revises(f"<think> {e['reasoning']} </think> <answer> 1 </answer>")
    checked = ["check" in tasks.generate("arithmetic", 0, i, max_digits=2, check_rate=0.3)["reasoning"]
               for i in range(1000)]
    assert 0.25 <= np.mean(checked) <= 0.35
    assert not arithmetic.revises("<think> guess 11 </think> <answer> check </answer>")
    with pytest.raises(ValueError, match="check_rate=1.5"):
        tasks.generate("arithmetic", 0, 0, check_rate=1.5)


def carries_before_the_leftmost_column(a: int, b: int) -> bool:
    da, db = str(a)[::-1].ljust(len(str(b)), "0"), str(b)[::-1].ljust(len(str(a)), "0")
    carry = 0
    for x, y in zip(da[:-1], db[:-1]):
        carry = (int(x) + int(y) + carry) // 10
        if carry:
            return True
    return False


def test_a_direct_trace_glances_without_carries_and_the_rest_work_the_steps_out():
    direct = []
    for i in range(400):
        noisy = i % 3 == 0
        plain = tasks.generate("arithmetic", 0, i, max_digits=3, noisy=noisy)
        e = tasks.generate("arithmetic", 0, i, max_digits=3, direct_rate=0.7, noisy=noisy)
        assert e["prompt"] == plain["prompt"]
        direct.append(e["reasoning"].startswith("guess "))
        if not direct[-1]:  # worked out, no guess before the steps
            assert (e["reasoning"], e["answer"], e["noisy"]) == (plain["reasoning"], plain["answer"],
                                                                 plain["noisy"])
            continue
        assert e["reasoning"] == f"guess {e['answer']}"
        right = e["answer"] == str(e["a"] + e["b"])
        assert e["noisy"] == (not right)
        if not plain["noisy"]:  # a clean glance is right exactly when no carry is needed
            assert right == (not carries_before_the_leftmost_column(e["a"], e["b"]))
    assert 0.65 <= np.mean(direct) <= 0.75
    assert arithmetic.addition_trace(482, 79, forget_carries=True)[1] == 451
    assert arithmetic.addition_trace(95, 8, forget_carries=True)[1] == 93
    assert arithmetic.addition_trace(95, 17, forget_carries=True)[1] == 102  # leftmost in full
    with pytest.raises(ValueError, match="direct_rate=-0.1"):
        tasks.generate("arithmetic", 0, 0, direct_rate=-0.1)
    with pytest.raises(ValueError, match="set one of them"):
        tasks.generate("arithmetic", 0, 0, direct_rate=0.5, check_rate=0.5)
    with pytest.raises(ValueError, match="addition only"):
        tasks.generate("arithmetic", 0, 0, direct_rate=0.5, ops=("+", "*"))


def test_countdown_miss_prob_makes_long_searches_rare():
    def misses(**kw):
        return [tasks.generate("countdown", 0, i, max_failed_attempts=6, **kw)["reasoning"].count(" no;")
                for i in range(400)]

    assert set(misses(miss_prob=0.0)) == {0}
    counts = np.bincount(misses(miss_prob=0.5), minlength=7)
    # Geometric, capped at 6: P(n) = 0.5^(n+1) for n < 6; 400 draws -> ~200, 100, 50, 25, ...
    assert 170 <= counts[0] <= 230 and 75 <= counts[1] <= 125 and counts[4:].sum() <= 40
    assert np.bincount(misses(), minlength=7).min() >= 40  # default: uniform on 0..6
    with pytest.raises(ValueError, match="miss_prob=1.0"):
        tasks.generate("countdown", 0, 0, miss_prob=1.0)


def test_difficulty_knob_controls_digits():
    for digits in (1, 3, 5):
        e = [tasks.generate("arithmetic", 0, i, min_digits=digits, max_digits=digits) for i in range(20)]
        assert all(len(str(x["a"])) == digits for x in e if x["a"])


def test_bad_settings_fail_with_clear_errors():
    with pytest.raises(ValueError, match="task='sudoku' is unknown"):
        tasks.generate("sudoku", 0, 0)
    with pytest.raises(ValueError, match="split='test'"):
        tasks.generate("countdown", 0, 0, split="test")
    with pytest.raises(ValueError, match="n_numbers=5"):
        tasks.generate("countdown", 0, 0, n_numbers=5)
    with pytest.raises(ValueError, match="op='-'"):
        tasks.generate("arithmetic", 0, 0, ops=("-",))


def test_corpus_is_deterministic_train_only_and_partly_noisy():
    docs = list(corpus.pretraining_documents(0, 200))
    assert docs == list(corpus.pretraining_documents(0, 200))
    examples = [corpus.corpus_example(0, i) for i in range(200)]
    noisy_fraction = np.mean([e["noisy"] for e in examples])
    assert 0.15 < noisy_fraction < 0.45  # default noise_rate=0.3
    assert {e["task"] for e in examples} == {"arithmetic", "countdown"}
    assert all(tasks.problem_split((arithmetic if e["task"] == "arithmetic" else countdown).problem_key(e))
               == tasks.TRAIN for e in examples)
    assert all(d.count("<think>") == 2 for d in docs)  # one in the system line, one in the completion


def test_template_structure():
    e = {"prompt": "Compute 1+2.", "reasoning": "1+2+0=3", "answer": "3"}
    text = chat.format_example(e)
    assert text.startswith(chat.SHORT_SYSTEM + "\nUser: Compute 1+2.\nAssistant:")
    assert text.endswith(" <think> 1+2+0=3 </think> <answer> 3 </answer>")
    assert chat.format_prompt(e, chat.R1_ZERO_SYSTEM).startswith("A conversation between User and Assistant.")
    assert chat.completion_of({"prompt": "p", "completion": " done"}) == " done"
    with pytest.raises(KeyError, match="'completion' or 'answer'"):
        chat.completion_of({"prompt": "p"})
