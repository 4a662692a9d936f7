"""Multi-digit addition and multiplication with a short scratchpad; difficulty knob = digits.

Addition writes one column per step, right to left, as `digit+digit+carry=sum`:
    prompt "Compute 482+79."  reasoning "2+9+0=11 8+7+1=16 4+0+1=5"  answer "561"
The answer's digits are the last digit of each column sum read backwards, with the final sum
written out in full (5 above), so every step is checkable and the trace stays short.

Multiplication uses the distributive decomposition TinyZero's models discovered for n-digit
multiplication (REFERENCE §5): one partial product per digit of the second operand, then a
running sum:
    prompt "Compute 482*37."  reasoning "482*7=3374 482*30=14460 3374+14460=17834"  answer "17834"
The second operand has at most `max_mul_digits` (default 2) digits to keep traces short.

`noisy=True` plants one slip (a column sum or partial product off by one unit) and carries it
through, so the answer is wrong but consistent with the trace: pretraining on a mix of clean and
noisy traces gives a policy that succeeds only sometimes, which GRPO needs (REFERENCE §5.2).

`direct_rate` > 0 makes that fraction of the addition traces state the sum at a glance, with no
steps, the way a hurried hand adds: each column summed and its carry forgotten, only the leftmost
column written in full (`reasoning "guess 451"` for 482+79), so a glance is right exactly when
no carry is needed (the slip still planted when noisy); the rest work every column out as above.
A policy cannot get a carry right at a glance from this corpus, only by working the steps out, so
one that learns to work them out raises its accuracy and its response length together (R1-Zero in
miniature), and a student pretrained on this corpus that rarely works them out has to be taught
to (R1's distillation vs RL).

`check_rate` > 0 changes the traces to a guess and, in that fraction of them, a check: the
reasoning states the answer at a glance ("guess", carries forgotten as above; a product's glance
is the trace's answer, slipped when noisy), then "check", every step worked out, and "ok" when
the worked answer agrees or "no" when it does not, the answer then being the worked one:
    reasoning "guess 451 check 2+9+0=11 8+7+1=16 4+0+1=5 no"   answer "561"
    reasoning "guess 451"                                        answer "451"
A trace is short and often wrong, or longer and checked: a policy that learns to check raises
its accuracy and its response length together (R1-Zero's growth of reasoning and
self-verification, in miniature); `revises` counts the responses that check.
"""

import random
import re

from r1jax.data.tasks import splits
from r1jax.data.tasks.answers import check_gold_answer, reasoning_part, verify_gold_answer

TASK = "arithmetic"
GUESS, CHECK, CHECK_AGREES, CHECK_DISAGREES = "guess", "check", "ok", "no"


def _operand(rng: random.Random, min_digits: int, max_digits: int) -> int:
    n_digits = rng.randint(min_digits, max_digits)
    low = 0 if n_digits == 1 else 10 ** (n_digits - 1)
    return rng.randint(low, 10**n_digits - 1)


def addition_trace(a: int, b: int, slip_column: int | None = None,
                   forget_carries: bool = False) -> tuple[str, int]:
    """Column-by-column sums (right to left); a slip adds one to that column's sum. With
    `forget_carries` no column passes its carry on (only the leftmost keeps its full sum)."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, digits, carry = [], [], 0
    columns = max(len(da), len(db))
    for col in range(columns):
        x = int(da[col]) if col < len(da) else 0
        y = int(db[col]) if col < len(db) else 0
        total = x + y + carry + (1 if col == slip_column else 0)
        steps.append(f"{x}+{y}+{carry}={total}")
        digits.append(total % 10)
        carry = 0 if forget_carries and col < columns - 1 else total // 10
    answer = int(str(carry) + "".join(str(d) for d in reversed(digits)))
    return " ".join(steps), answer


def multiplication_trace(a: int, b: int, slip_term: int | None = None) -> tuple[str, int]:
    """Partial products a*(digit*10^k), then a running sum; a slip adds 10^k to that product."""
    steps, partials = [], []
    for k, digit in enumerate(reversed(str(b))):
        multiplier = int(digit) * 10**k
        if multiplier == 0 and len(str(b)) > 1:
            continue  # a zero digit contributes nothing; skipping it keeps the trace short
        product = a * multiplier + (10**k if k == slip_term else 0)
        steps.append(f"{a}*{multiplier}={product}")
        partials.append(product)
    running = partials[0]
    for product in partials[1:]:
        steps.append(f"{running}+{product}={running + product}")
        running += product
    return " ".join(steps), running


def make_problem(
    rng: random.Random, *, min_digits: int = 1, max_digits: int = 3, ops: tuple[str, ...] = ("+",),
    max_mul_digits: int = 2,
) -> dict:
    op = rng.choice(ops)
    a = _operand(rng, min_digits, max_digits)
    b = _operand(rng, min_digits, min(max_digits, max_mul_digits) if op == "*" else max_digits)
    if op == "*" and b == 0:
        b = 1  # "x*0" has no partial products to show
    return {"op": op, "a": a, "b": b}


def problem_key(problem: dict) -> str:
    return f"{TASK}:{problem['a']}{problem['op']}{problem['b']}"


def solve(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    raise ValueError(f"op={op!r} is not supported; use '+' or '*'")


def generate(
    seed: int, index: int, *, split: str = splits.TRAIN, heldout_percent: int = 10,
    min_digits: int = 1, max_digits: int = 3, ops: tuple[str, ...] = ("+",), max_mul_digits: int = 2,
    check_rate: float = 0.0, direct_rate: float = 0.0, noisy: bool = False,
) -> dict:
    """Example `index` of the stream `seed`: prompt, reasoning, answer (+ op, a, b, task).
    A fraction `direct_rate` of the traces state the answer with no steps, or a fraction
    `check_rate` recompute their steps after a "check" (see above; one of the two at a time)."""
    for name, rate in (("check_rate", check_rate), ("direct_rate", direct_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name}={rate} must be in [0, 1]")
    if direct_rate and set(ops) != {"+"}:
        raise ValueError(f"direct_rate={direct_rate} is defined for addition only; ops={ops}")
    if check_rate and direct_rate:
        raise ValueError(f"check_rate={check_rate} and direct_rate={direct_rate}: set one of them "
                         "(checked traces all start with a guess; direct ones are a guess alone)")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits={min_digits} <= max_digits={max_digits}")
    for op in ops:
        solve(op, 1, 1)  # validates the op names early, with the clear error above
    problem, rng = splits.sample_in_split(
        lambda r: make_problem(r, min_digits=min_digits, max_digits=max_digits, ops=tuple(ops),
                               max_mul_digits=max_mul_digits),
        problem_key, seed=seed, index=index, split=split, heldout_percent=heldout_percent,
    )
    op, a, b = problem["op"], problem["a"], problem["b"]
    trace = addition_trace if op == "+" else multiplication_trace
    places = max(len(str(a)), len(str(b))) if op == "+" else len(str(b))
    slip = rng.randrange(places) if noisy else None
    reasoning, answer = trace(a, b, slip)
    # Drawn only when asked for, so that rates of 0 leave every stream as it was.
    glance = answer  # a product at a glance: the trace's answer (slipped when noisy)
    if op == "+" and (direct_rate or check_rate):
        _, glance = addition_trace(a, b, slip, forget_carries=True)  # a glance drops the carries
    if check_rate or (direct_rate and rng.random() < direct_rate):
        reasoning, answer = f"{GUESS} {glance}", glance
    if check_rate and rng.random() < check_rate:
        steps, correct = trace(a, b)  # the check works every step out, without a slip
        verdict = CHECK_AGREES if correct == answer else CHECK_DISAGREES
        reasoning, answer = f"{reasoning} {CHECK} {steps} {verdict}", correct
    return {
        "task": TASK,
        "prompt": f"Compute {a}{op}{b}.",
        "reasoning": reasoning,
        "answer": str(answer),
        "op": op,
        "a": a,
        "b": b,
        "noisy": answer != solve(op, a, b),
    }


def _has_operands(example: dict) -> bool:
    return all(example.get(k) is not None for k in ("op", "a", "b"))


def _true_answer(example: dict) -> str:
    try:
        a, b = int(example["a"]), int(example["b"])
    except (TypeError, ValueError):
        raise ValueError(f"an arithmetic example needs integer operands, got a={example['a']!r}, "
                         f"b={example['b']!r}; fix the record or drop a and b to judge it by "
                         "its 'answer'") from None
    return str(solve(example["op"], a, b))


def check_example(example: dict) -> None:
    """Raises when `example` lacks what `verify` reads: integer `a`, `b` and a known `op`, or
    else an `answer`."""
    if _has_operands(example):
        _true_answer(example)
    else:
        check_gold_answer(example)


def verify(completion, example: dict) -> bool:
    """The final answer equals the true sum (or product) in value, computed from `op`, `a`, `b`
    (a noisy example's `answer` is its trace's wrong one); an example without them (a record
    written without its operands) is judged by its `answer`."""
    if _has_operands(example):
        return verify_gold_answer(completion, {"answer": _true_answer(example)})
    return verify_gold_answer(completion, example)


def reward(completion, example: dict) -> float:
    """1 for a correct final answer, else 0 (R1's accuracy reward)."""
    return float(verify(completion, example))


_CHECKED = re.compile(rf"\b{CHECK}\b")


def revises(completion) -> bool:
    """The reasoning checks its steps by computing them again ("check ...")."""
    return bool(_CHECKED.search(reasoning_part(completion)))
