"""Reading a model's final answer and checking it exactly: pure Python, no model (REFERENCE §5.1).

The tasks' verifiers (`arithmetic.verify`, `countdown.verify`, `files.verify`) are built from the
pieces here: extraction of the last `<answer>` (or `\\boxed{}`), exact arithmetic on expressions,
and answer normalisation. Rollouts score completions with those verifiers in evaluation, GRPO
rewards and the rejection filter alike (r1jax/rollout/scoring.py).

Model text is adversarial: nothing here calls `eval`. Expressions go through an `ast` whitelist
evaluated exactly with Fractions; inputs are length-capped before any parsing, and every value
(a literal or the result of any operation) is bounded in size before it is built, so no
completion can crash a verifier or hang the loop: exact products of a few hundred `9e9999`
literals would take seconds, and a bound on powers alone does not stop them.
"""

import ast
import math
import re
from fractions import Fraction

MAX_COMPLETION_CHARS = 16_384  # only this tail is judged (far beyond any sampling budget here)
MAX_EXPRESSION_CHARS = 1_000  # longer answers are compared as canonical strings, never parsed
# ~6,000 decimal digits: the most bits a numerator or denominator may have, in a literal or in the
# result of any operation. Operations on such numbers take microseconds, so a 1,000-character
# expression is judged in milliseconds.
_MAX_RESULT_BITS = 20_000
_MAX_EXPONENT_DIGITS = 4  # "1e400" is fine, "1e999999999" is refused before it is computed
_DECIMAL_LITERAL = re.compile(r"(?P<whole>\d*)\.?(?P<fraction>\d*)(?:e(?P<exponent>[+-]?\d+))?")


class UnsafeExpression(ValueError):
    """The text is not a small arithmetic expression on numeric literals."""


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

def judged_text(completion) -> str:
    """The part of a completion that verifiers read: its last MAX_COMPLETION_CHARS characters
    ("" for anything that is not a string)."""
    return completion[-MAX_COMPLETION_CHARS:] if isinstance(completion, str) else ""


def reasoning_part(completion) -> str:
    """The judged text up to `</think>` (all of it when the reasoning is not closed): where a
    task looks for checks and revisions."""
    text = judged_text(completion)
    end = text.find("</think>")
    return text if end < 0 else text[:end]


def extract_tagged_answer(completion) -> str | None:
    """Content of the last `<answer>...</answer>`, stripped; None when there is none."""
    text = judged_text(completion)
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
    return tagged if tagged is not None else extract_boxed(judged_text(completion))


# --------------------------------------------------------------------------------------------
# Safe exact arithmetic
# --------------------------------------------------------------------------------------------

def _bits(x: Fraction) -> tuple[int, int]:
    return x.numerator.bit_length(), x.denominator.bit_length()


def _sum_bits(a: Fraction, b: Fraction) -> int:
    (an, ad), (bn, bd) = _bits(a), _bits(b)
    return max(max(an + bd, bn + ad) + 1, ad + bd)  # (an*bd + bn*ad) / (ad*bd), before reducing


def _product_bits(a: Fraction, b: Fraction) -> int:
    (an, ad), (bn, bd) = _bits(a), _bits(b)
    return max(an + bn, ad + bd)


def _quotient_bits(a: Fraction, b: Fraction) -> int:
    (an, ad), (bn, bd) = _bits(a), _bits(b)
    return max(an + bd, ad + bn)


# op -> (exact operation, an upper bound on the bits of its result's numerator and denominator,
# computed from the operands' bit lengths before the operation runs)
_BINARY = {ast.Add: (lambda a, b: a + b, _sum_bits), ast.Sub: (lambda a, b: a - b, _sum_bits),
           ast.Mult: (lambda a, b: a * b, _product_bits),
           ast.Div: (lambda a, b: a / b, _quotient_bits)}


def _literal(node: ast.Constant, source: str, integers_only: bool) -> Fraction:
    allowed = (int,) if integers_only else (int, float)
    if isinstance(node.value, bool) or not isinstance(node.value, allowed):
        raise UnsafeExpression(f"{node.value!r} is not an allowed number")
    # Read the literal's own text so "0.1" is exactly 1/10, not the nearest binary float.
    literal = (ast.get_source_segment(source, node) or "").replace("_", "")
    parts = _DECIMAL_LITERAL.fullmatch(literal.lower())
    if parts is None:
        raise UnsafeExpression(f"{literal[:40]} is not a decimal number")  # 0x1f, 0b1, 0o7
    exponent = parts["exponent"] or "0"
    if len(exponent.lstrip("+-")) > _MAX_EXPONENT_DIGITS:
        raise UnsafeExpression(f"exponent of {literal[:40]} is too large")
    # Numerator and denominator each have at most digits + |exponent| decimal digits.
    digits = len(parts["whole"]) + len(parts["fraction"]) + abs(int(exponent))
    if digits * math.log2(10) > _MAX_RESULT_BITS:
        raise UnsafeExpression(f"{literal[:40]}... has too many digits ({digits} > "
                               f"{int(_MAX_RESULT_BITS / math.log2(10))})")
    return Fraction(literal)


def _bounded(bits: int, what: str) -> None:
    if bits > _MAX_RESULT_BITS:
        raise UnsafeExpression(f"{what} would have up to {bits} bits > {_MAX_RESULT_BITS}")


def _evaluate(node: ast.AST, source: str, rules: dict, literals: list) -> Fraction:
    if isinstance(node, ast.Constant):
        value = _literal(node, source, rules["integers_only"])
        literals.append(value)
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate(node.left, source, rules, literals)
        right = _evaluate(node.right, source, rules, literals)
        operation, result_bits = _BINARY[type(node.op)]
        _bounded(result_bits(left, right), f"the {type(node.op).__name__} result")
        return operation(left, right)  # ZeroDivisionError propagates
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and rules["allow_power"]:
        base = _evaluate(node.left, source, rules, literals)
        exponent = _evaluate(node.right, source, rules, literals)
        if exponent.denominator != 1:
            raise UnsafeExpression("not an integer power")
        _bounded(max(_bits(base)) * abs(exponent.numerator), "the power")  # stops 9**9**9
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
    (and, if allowed, unary +/- and **) with parentheses, for a literal or a result whose
    numerator or denominator would exceed _MAX_RESULT_BITS bits (checked before it is built),
    and ZeroDivisionError for division by zero.
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


def check_gold_answer(example: dict) -> None:
    """Raises KeyError when `example` has no `answer` to judge a completion against."""
    if example.get("answer") is None:
        raise KeyError(f"example has no 'answer' to check the completion against "
                       f"(fields: {sorted(example)})")


def verify_gold_answer(completion, example: dict) -> bool:
    r"""The last `<answer>` (or `\boxed{}`) equals the example's `answer` in value (exact:
    1/2 == 0.5 == \frac{1}{2}), or as canonical text when either is not a number."""
    check_gold_answer(example)
    return answers_match(extract_answer(completion), example["answer"])


def answer_key(completion) -> str | None:
    """The canonical final answer, for majority voting (cons@k); None when there is none."""
    answer = extract_answer(completion)
    return None if answer is None else canonical_answer(answer)
