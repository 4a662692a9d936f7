"""Rule-based rewards for R1-style RL (REFERENCE §3.3, §5.1). Pure Python + numpy, no model.

Every reward has the signature `fn(prompts, completions, **fields) -> np.ndarray` (float32, one
value per completion). `fields` are the per-example columns of an RL batch (`answer`, `numbers`,
`target`, ...); each reward takes what it needs and ignores the rest, so any set of rewards can
be called with the same batch and combined with `combine_rewards([(fn, weight), ...])`.

Model text is adversarial: nothing here calls `eval`. Expressions go through an `ast` whitelist
evaluated exactly with Fractions; inputs are length-capped before any parsing, and powers are
bounded, so no completion can crash a reward or hang the loop.
"""

import ast
import re
import unicodedata
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

RewardFn = Callable[..., np.ndarray]

MAX_COMPLETION_CHARS = 16_384  # only this tail is judged (far beyond any sampling budget here)
MAX_EXPRESSION_CHARS = 1_000  # longer answers are compared as canonical strings, never parsed
MAX_COUNTDOWN_CHARS = 256
_MAX_RESULT_BITS = 20_000  # ~6,000 decimal digits: bounds what powers may build
_MAX_EXPONENT_DIGITS = 4  # "1e400" is fine, "1e999999999" is refused before it is computed


class UnsafeExpression(ValueError):
    """The text is not a small arithmetic expression on numeric literals."""


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

def _text(completion) -> str:
    return completion[-MAX_COMPLETION_CHARS:] if isinstance(completion, str) else ""


def extract_tagged_answer(completion) -> str | None:
    """Content of the last `<answer>...</answer>`, stripped; None when there is none."""
    text = _text(completion)
    close = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, close) if close >= 0 else -1
    return text[start + len("<answer>") : close].strip() if start >= 0 else None


def _boxed_at(text: str, start: int) -> tuple[str, int] | None:
    r"""(content, end) of the `\boxed{...}` starting at `start`, nested braces included."""
    i = start + len("\\boxed")
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip(), j + 1
    return None  # unbalanced


def extract_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}`; None if absent or unbalanced."""
    found = _boxed_at(text, text.rfind("\\boxed")) if "\\boxed" in text else None
    return found[0] if found else None


def extract_answer(completion) -> str | None:
    r"""The last `<answer>` content if any, else the last `\boxed{}` content, else None."""
    tagged = extract_tagged_answer(completion)
    return tagged if tagged is not None else extract_boxed(_text(completion))


# --------------------------------------------------------------------------------------------
# Safe exact arithmetic
# --------------------------------------------------------------------------------------------

_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def _literal(node: ast.Constant, source: str, integers_only: bool) -> Fraction:
    allowed = (int,) if integers_only else (int, float)
    if isinstance(node.value, bool) or not isinstance(node.value, allowed):
        raise UnsafeExpression(f"{node.value!r} is not an allowed number")
    # Read the literal's own text so "0.1" is exactly 1/10, not the nearest binary float.
    literal = (ast.get_source_segment(source, node) or "").replace("_", "")
    mantissa, _, exponent = literal.lower().partition("e")
    if len(exponent.lstrip("+-")) > _MAX_EXPONENT_DIGITS:
        raise UnsafeExpression(f"exponent of {literal[:40]} is too large")
    return Fraction(literal)


def _evaluate(node: ast.AST, source: str, rules: dict, literals: list) -> Fraction:
    if isinstance(node, ast.Constant):
        value = _literal(node, source, rules["integers_only"])
        literals.append(value)
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate(node.left, source, rules, literals)
        right = _evaluate(node.right, source, rules, literals)
        return _BINARY[type(node.op)](left, right)  # ZeroDivisionError propagates
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and rules["allow_power"]:
        base = _evaluate(node.left, source, rules, literals)
        exponent = _evaluate(node.right, source, rules, literals)
        size = max(abs(base.numerator), base.denominator).bit_length()
        if exponent.denominator != 1 or size * abs(exponent.numerator) > _MAX_RESULT_BITS:
            raise UnsafeExpression("power too large or not an integer power")  # stops 9**9**9
        return base ** int(exponent)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and rules["allow_unary"]:
        value = _evaluate(node.operand, source, rules, literals)
        return -value if isinstance(node.op, ast.USub) else value
    raise UnsafeExpression(f"{type(node).__name__} is not allowed")


def evaluate_expression(text: str, *, allow_unary: bool = True, allow_power: bool = False,
                        integers_only: bool = False, max_chars: int = MAX_EXPRESSION_CHARS,
                        ) -> tuple[Fraction, list[Fraction]]:
    """Exact value of an arithmetic expression and its numeric literals, in source order.

    Raises UnsafeExpression for anything outside numbers (integers only, if asked), + - * /
    (and, if allowed, unary +/- and bounded **) with parentheses, and ZeroDivisionError for
    division by zero.
    """
    if len(text) > max_chars:
        raise UnsafeExpression(f"expression is {len(text)} chars > {max_chars}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise UnsafeExpression(f"not an expression: {e}") from None
    literals: list[Fraction] = []
    rules = {"allow_unary": allow_unary, "allow_power": allow_power, "integers_only": integers_only}
    try:
        return _evaluate(tree.body, text.strip(), rules, literals), literals
    except RecursionError:
        raise UnsafeExpression("expression nests too deeply") from None


# --------------------------------------------------------------------------------------------
# Answer normalisation
# --------------------------------------------------------------------------------------------

_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_LATEX_NOISE = ("$", "\\(", "\\)", "\\[", "\\]", "\\!", "\\,", "\\left", "\\right")


def canonical_answer(text: str) -> str:
    r"""Answer text with LaTeX wrappers and spacing removed: `\boxed{\frac{1}{2}}` -> `(1)/(2)`."""
    text = text.strip()
    for _ in range(4):  # bounded: each unwrap rescans the text, and real answers nest 1-2 deep
        found = _boxed_at(text, 0) if text.startswith("\\boxed") else None
        if not found or found[1] != len(text):
            break
        text = found[0]  # unwrap only a box that is the whole answer
    for noise in _LATEX_NOISE:
        text = text.replace(noise, "")
    for _ in range(8):  # innermost \frac first; nested fractions need a few passes
        text, n = _FRAC.subn(r"(\1)/(\2)", text)
        if not n:
            break
    text = text.replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    text = text.replace("{", "(").replace("}", ")")  # what braces remain only group
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = re.sub(r"^[A-Za-z]\w*\s*=\s*", "", text)  # "x = 5" -> "5"
    return "".join(text.split()).rstrip(".")


def answer_value(text: str) -> Fraction | None:
    """The exact value of an answer, or None when it is not a (safe) number or expression."""
    try:
        value, _ = evaluate_expression(canonical_answer(text), allow_power=True)
        return value
    except (UnsafeExpression, ZeroDivisionError, ValueError, OverflowError):
        return None


def answers_match(predicted: str | None, gold) -> bool:
    """Equal values (exact: 1/2 == 0.5 == \\frac{1}{2}); else equal canonical strings."""
    if predicted is None or gold is None:
        return False
    gold = str(gold)
    predicted_value, gold_value = answer_value(predicted), answer_value(gold)
    if predicted_value is not None and gold_value is not None:
        return predicted_value == gold_value
    return canonical_answer(predicted) == canonical_answer(gold) != ""


# --------------------------------------------------------------------------------------------
# Rewards: fn(prompts, completions, **fields) -> float32 array
# --------------------------------------------------------------------------------------------

def _column(fields: dict, name: str, completions: Sequence, reward: str) -> Sequence:
    if name not in fields:
        raise KeyError(f"{reward} needs the field {name!r} (one value per completion); "
                       f"got fields {sorted(fields)}")
    column = fields[name]
    if len(column) != len(completions):
        raise ValueError(f"{reward}: field {name!r} has {len(column)} values for "
                         f"{len(completions)} completions")
    return column


def accuracy_reward(prompts, completions, **fields) -> np.ndarray:
    r"""1 if the last `<answer>` (or `\boxed{}`) equals field `answer` in value, else 0."""
    gold = _column(fields, "answer", completions, "accuracy_reward")
    return np.array([float(answers_match(extract_answer(c), g)) for c, g in zip(completions, gold)],
                    np.float32)


def has_r1_format(completion) -> bool:
    """`<think>`, `</think>`, `<answer>`, `</answer>` each exactly once, in that order."""
    text = _text(completion)
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    if any(text.count(tag) != 1 for tag in tags):
        return False
    positions = [text.index(tag) for tag in tags]
    return positions == sorted(positions)


def format_reward(prompts, completions, **fields) -> np.ndarray:
    """1 for the R1 structure (Logic-RL's check, REFERENCE §5.1), else 0."""
    return np.array([float(has_r1_format(c)) for c in completions], np.float32)


def _chain_of_thought(completion) -> str:
    text = _text(completion)
    start, end = text.find("<think>"), text.find("</think>")
    return text[start + len("<think>") : end] if 0 <= start < end else text


def _in_script(word: str, script: str) -> bool:
    return all(unicodedata.name(ch, "?").split(" ")[0] == script for ch in word if ch.isalpha())


def language_consistency(completion, script: str = "LATIN") -> float:
    """Num(words in `script`) / Num(words) in the CoT (R1 §2.3.2); words without letters
    (numbers, equations) do not count, and a CoT with no such words scores 1."""
    words = [w for w in _chain_of_thought(completion).split() if any(ch.isalpha() for ch in w)]
    if not words:
        return 1.0
    return sum(_in_script(w, script.upper()) for w in words) / len(words)


def language_consistency_reward(prompts, completions, *, script: str = "LATIN", **fields) -> np.ndarray:
    """Fraction of target-script words in the CoT; `script` is a Unicode script name such as
    "LATIN", "CYRILLIC", "CJK" (pass it with functools.partial)."""
    return np.array([language_consistency(c, script) for c in completions], np.float32)


def countdown_score(answer: str | None, numbers, target, *, format_score: float = 0.1,
                    score: float = 1.0) -> float:
    """TinyZero's Countdown score (REFERENCE §5.1): 0 without an answer; `format_score` when
    the expression is invalid, does not use each number exactly once, divides by zero or
    misses; `score` when it equals the target exactly."""
    if answer is None or numbers is None or target is None:
        return 0.0
    try:
        value, literals = evaluate_expression(answer, allow_unary=False, allow_power=False,
                                              integers_only=True, max_chars=MAX_COUNTDOWN_CHARS)
    except (UnsafeExpression, ZeroDivisionError, ValueError, OverflowError):
        return format_score
    if sorted(literals) != sorted(Fraction(int(n)) for n in numbers):
        return format_score
    return score if value == Fraction(int(target)) else format_score


def countdown_reward(prompts, completions, *, format_score: float = 0.1, score: float = 1.0,
                     **fields) -> np.ndarray:
    """Countdown reward per completion from fields `numbers` and `target`.

    TinyZero keeps only the last line after "Assistant:" because its prompt contains an example
    answer; here the completion holds only model text, so its last `<answer>` is used.
    """
    numbers = _column(fields, "numbers", completions, "countdown_reward")
    targets = _column(fields, "target", completions, "countdown_reward")
    return np.array([countdown_score(extract_tagged_answer(c), n, t, format_score=format_score, score=score)
                     for c, n, t in zip(completions, numbers, targets)], np.float32)


def combine_rewards(weighted: Sequence[tuple[RewardFn, float]]) -> RewardFn:
    """sum_i w_i * fn_i(...), e.g. R1's Reward_acc + Reward_format (equal weights, REFERENCE §3.3)."""
    weighted = list(weighted)
    if not weighted:
        raise ValueError("combine_rewards needs at least one (reward_fn, weight) pair")
    for fn, weight in weighted:
        if not callable(fn) or not isinstance(weight, (int, float)):
            raise TypeError(f"expected (reward_fn, weight) pairs, got ({fn!r}, {weight!r})")

    def combined(prompts, completions, **fields) -> np.ndarray:
        total = np.zeros(len(completions), np.float32)
        for fn, weight in weighted:
            total += np.float32(weight) * np.asarray(fn(prompts, completions, **fields), np.float32)
        return total

    return combined
