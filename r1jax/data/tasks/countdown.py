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
"""

import random

from r1jax.data.tasks import splits

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


def generate(
    seed: int, index: int, *, split: str = splits.TRAIN, heldout_percent: int = 10,
    n_numbers: int = 3, low: int = 1, high: int = 20, max_target: int = 100,
    max_failed_attempts: int = 2, noisy: bool = False,
) -> dict:
    """Example `index` of the stream `seed`: prompt, reasoning, answer (+ numbers, target, task)."""
    if n_numbers not in (3, 4):
        raise ValueError(f"n_numbers={n_numbers} must be 3 or 4 (longer searches do not fit tiny traces)")
    if not 1 <= low < high:
        raise ValueError(f"need 1 <= low={low} < high={high}")
    problem, rng = splits.sample_in_split(
        lambda r: make_problem(r, n_numbers=n_numbers, low=low, high=high, max_target=max_target),
        problem_key, seed=seed, index=index, split=split, heldout_percent=heldout_percent,
    )
    numbers, target = problem["numbers"], problem["target"]
    n_misses = rng.randint(1 if noisy else 0, max(max_failed_attempts, 1 if noisy else 0))
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
