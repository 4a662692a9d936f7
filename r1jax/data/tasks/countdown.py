"""Countdown: combine 3 (or 4) small numbers with + - * / to reach a target, each number once.

Targets are reachable by construction: the generator combines the numbers pairwise in random
order (as in the game, intermediate values stay positive integers) and the final value becomes
the target. The reasoning is a short search: zero to `max_failed_attempts` attempts that miss,
each closed with "no", then the one that hits, closed with "yes":
    prompt "Use 3 12 5 to make 41."
    reasoning "12+5=17 17+3=20 no; 12*3=36 36+5=41 yes"   answer "(12*3)+5"
The answer is an expression the TinyZero reward (REFERENCE §5.1) accepts: integer literals,
+ - * / and parentheses.

`noisy=True` makes the trace declare a missed attempt a hit ("... yes") and answer it, so the
answer uses every number once but misses the target (TinyZero scores this 0.1, not 1).

A trace that closes an attempt with "no" and goes on checked an attempt and revised it
(`revises`): R1-Zero's self-verification in miniature, counted in rollouts and evaluations.

The gold `answer` is one expression among many that reach the target, so a completion is never
judged against it: `verify` accepts any expression over exactly the given numbers that equals the
target, and nothing else (a bare "41" for "use 3 12 5 to make 41" is wrong).
"""

import random
import re
from fractions import Fraction

from r1jax.data.tasks import splits
from r1jax.data.tasks.answers import (UnsafeExpression, evaluate_expression, extract_tagged_answer,
                                      reasoning_part)

TASK = "countdown"


def _combine(rng: random.Random, x: tuple[int, str], y: tuple[int, str]) -> tuple[int, str, str] | None:
    """One game move on (value, expression) pairs -> (value, expression, step text), or None."""
    (a, ea), (b, eb) = (x, y) if x[0] >= y[0] else (y, x)  # larger first: '-' and '/' stay positive
    moves = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
    op = rng.choice(moves)
    value = {"+": a + b, "*": a * b, "-": a - b, "/": a // b if op == "/" else 0}[op]
    wrap = lambda e: e if e.isdigit() else f"({e})"  # noqa: E731 - parenthesise compound terms only
    return value, f"{wrap(ea)}{op}{wrap(eb)}", f"{a}{op}{b}={value}"


def play(rng: random.Random, numbers: list[int]) -> tuple[int, str, list[str]]:
    """Combines all numbers in a random order -> (final value, expression, step texts)."""
    pool = [(n, str(n)) for n in numbers]
    steps = []
    while len(pool) > 1:
        i, j = sorted(rng.sample(range(len(pool)), 2))
        y, x = pool.pop(j), pool.pop(i)
        value, expression, step = _combine(rng, x, y)
        steps.append(step)
        pool.append((value, expression))
    return pool[0][0], pool[0][1], steps


def make_problem(rng: random.Random, *, n_numbers: int = 3, low: int = 1, high: int = 20,
                 max_target: int = 100) -> dict:
    while True:  # about half of the draws land in 1..max_target; the loop ends quickly
        numbers = [rng.randint(low, high) for _ in range(n_numbers)]
        target, expression, steps = play(rng, numbers)
        if 1 <= target <= max_target:
            return {"numbers": numbers, "target": target, "expression": expression, "steps": steps}


def problem_key(problem: dict) -> str:
    # The solution is not part of the key: two routes to the same puzzle are the same problem.
    return f"{TASK}:{sorted(problem['numbers'])}->{problem['target']}"


def _number_of_misses(rng: random.Random, fewest: int, most: int, miss_prob: float | None) -> int:
    if miss_prob is None:
        return rng.randint(fewest, most)
    n = fewest
    while n < most and rng.random() < miss_prob:
        n += 1
    return n


def generate(
    seed: int, index: int, *, split: str = splits.TRAIN, heldout_percent: int = 10,
    n_numbers: int = 3, low: int = 1, high: int = 20, max_target: int = 100,
    max_failed_attempts: int = 2, miss_prob: float | None = None, noisy: bool = False,
) -> dict:
    """Example `index` of the stream `seed`: prompt, reasoning, answer (+ numbers, target, task).

    The trace misses 0..max_failed_attempts times before its hit: uniformly, or with `miss_prob`
    each further miss has that probability (few long searches, mostly short ones)."""
    if miss_prob is not None and not 0.0 <= miss_prob < 1.0:
        raise ValueError(f"miss_prob={miss_prob} must be in [0, 1) (or None: uniform)")
    if n_numbers not in (3, 4):
        raise ValueError(f"n_numbers={n_numbers} must be 3 or 4 (longer searches do not fit tiny traces)")
    if not 1 <= low < high:
        raise ValueError(f"need 1 <= low={low} < high={high}")
    problem, rng = splits.sample_in_split(
        lambda r: make_problem(r, n_numbers=n_numbers, low=low, high=high, max_target=max_target),
        problem_key, seed=seed, index=index, split=split, heldout_percent=heldout_percent,
    )
    numbers, target = problem["numbers"], problem["target"]
    fewest = 1 if noisy else 0
    n_misses = _number_of_misses(rng, fewest, max(max_failed_attempts, fewest), miss_prob)
    misses = []
    for _ in range(100):  # bounded: with tiny ranges every order may hit the target
        if len(misses) == n_misses:
            break
        value, expression, steps = play(rng, numbers)
        if value != target:
            misses.append((expression, steps))
    attempts = [" ".join(steps) + " no" for _, steps in misses]
    answer = problem["expression"]
    if noisy and misses:
        answer = misses[-1][0]
        attempts[-1] = attempts[-1][: -len(" no")] + " yes"
    else:
        attempts.append(" ".join(problem["steps"]) + " yes")
    return {
        "task": TASK,
        "prompt": f"Use {' '.join(map(str, numbers))} to make {target}.",
        "reasoning": "; ".join(attempts),
        "answer": answer,
        "numbers": numbers,
        "target": target,
        "noisy": answer != problem["expression"],
    }


# ----------------------------------------------------------------------------- checking

MAX_ANSWER_CHARS = 256  # longer answers are never parsed (no Countdown solution comes close)
FORMAT_SCORE = 0.1  # TinyZero: an answer that is not a solution still earns this much


def check_expression(answer: str | None, numbers, target) -> bool | None:
    """True when `answer` is an expression over exactly `numbers` (each once; integers, + - * /,
    parentheses) that equals `target` exactly; False when it is such an expression that misses,
    or is not one; None when there is no answer at all."""
    if answer is None:
        return None
    try:
        value, literals = evaluate_expression(answer, allow_unary=False, allow_power=False,
                                              integers_only=True, max_chars=MAX_ANSWER_CHARS)
    except (UnsafeExpression, ZeroDivisionError, ValueError, OverflowError):
        return False
    uses_each_once = sorted(literals) == sorted(Fraction(int(n)) for n in numbers)
    return uses_each_once and value == Fraction(int(target))


def _numbers_and_target(example: dict) -> tuple[list[int], int]:
    missing = [name for name in ("numbers", "target") if example.get(name) is None]
    if missing:
        raise KeyError(f"a countdown example needs the fields {missing} to be checked "
                       f"(fields: {sorted(example)})")
    numbers, target = example["numbers"], example["target"]
    try:
        if isinstance(numbers, (str, bytes)):
            raise TypeError("a string")
        return [int(n) for n in numbers], int(target)
    except (TypeError, ValueError):
        raise ValueError(f"a countdown example needs a list of integer 'numbers' and an integer "
                         f"'target', got numbers={numbers!r}, target={target!r}") from None


def check_example(example: dict) -> None:
    """Raises when `example` lacks what `verify` reads: a list of integer `numbers` and an
    integer `target`."""
    _numbers_and_target(example)


def verify(completion, example: dict) -> bool:
    """The completion's last `<answer>` solves the puzzle (`check_expression`)."""
    return check_expression(extract_tagged_answer(completion), *_numbers_and_target(example)) is True


def reward(completion, example: dict) -> float:
    """TinyZero's Countdown score (REFERENCE §5.1): 1 for a solution, FORMAT_SCORE for any other
    answer (invalid, a number reused or left out, a division by zero, a miss), 0 without one.

    TinyZero keeps only the text after "Assistant:" because its prompt holds an example answer;
    here the completion holds only model text, so its last `<answer>` is used.
    """
    solved = check_expression(extract_tagged_answer(completion), *_numbers_and_target(example))
    return 0.0 if solved is None else 1.0 if solved else FORMAT_SCORE


_REVISION = re.compile(r"\bno\s*;\s*\S")  # an attempt rejected, then another one begun


def revises(completion) -> bool:
    """The reasoning rejects an attempt after checking it ("... no;") and makes another."""
    return bool(_REVISION.search(reasoning_part(completion)))
