r"""The `math` task: final answers judged by equivalence with math-verify.

Records of users' GSM8K / MATH style data sets (r1jax/data/layouts.py) carry `task="math"`, a
`prompt` (the user message), a reference `answer` and, when the set has one, a `reasoning`. A
completion's final answer is read as for every task (`answers.extract_answer`: the last
`<answer>`, else the last `\boxed{}`), and it is correct when math-verify (the checker TRL,
open-r1, verl and MaxText use) finds it equivalent to the reference: `\frac{1}{2}` = `0.5` =
`1/2`, `\$1,234` = `1234`, `50\%` = `0.5`, `x = 3` = `3`, `[1,2)` and `\{1,2\}` as an interval
and a set, units written in `\text{}` ignored.

Time. Parsing and comparing go through sympy, where model text such as `9^{9^{9^9}}` runs for
minutes. math-verify bounds its calls with its own `signal.alarm`; it is turned off here
(`parsing_timeout=None`, `timeout_seconds=None`) and the one alarm is `score`'s per-completion
limit (r1jax/rollout/scoring.py `time_limit`). Both cannot run: `signal.alarm` replaces the
other timer and cancels it on its way out, and counts whole seconds only. score's JudgeTimeout
is a BaseException, as math-verify's own, so the `except Exception` blocks inside math-verify
and sympy let it through. Text is also length-capped before parsing (a single C operation
cannot be interrupted), and outside the main thread, where no alarm can be set, the cap is the
only bound.
"""

from __future__ import annotations

import functools
import logging
import re

from r1jax.data.tasks.answers import canonical_answer, extract_answer

TASK = "math"
# Longer answers are never parsed: they score 0 (no reference answer comes close to this).
MAX_ANSWER_CHARS = 1_000


class _DropDisabledTimeoutNotice(logging.Filter):
    """math-verify logs a warning when its timeout is off; here that is by design (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


@functools.cache
def math_verify():
    """The math_verify module, imported and warmed up once: the import (sympy, the LaTeX
    grammar) and the first comparison (sympy's lazy imports) take about 1.5 s, so
    `check_example` calls this before any completion is judged against a time limit."""
    try:
        import math_verify as library
    except ImportError:
        raise ImportError("the math task needs math-verify: pip install 'math-verify"
                          "[antlr4_13_2]==0.9.0' (pinned in requirements.txt)") from None
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropDisabledTimeoutNotice())
    library.verify(library.parse("$\\frac{1}{2}$", parsing_timeout=None),
                   library.parse("0.5", parsing_timeout=None), timeout_seconds=None)
    return library


_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")  # \text{ cm}
_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")  # "dollars", not "\infty" or "x"


def _reads_as_plain_text(text: str) -> bool:
    """Words (`18 dollars`, `The answer is 1/2`) and Python powers (`9**2`) are not LaTeX: read as LaTeX,
    letters multiply as variables (18*a*do*l*l*r*s) and `**` is dropped (9)."""
    return "**" in text or bool(_PROSE_WORD.search(_LATEX_TEXT.sub("", text)))


def _has_math_object(parsed: list) -> bool:
    """math-verify's parse returns sympy objects followed by the matched text; only text means
    the parse failed."""
    return any(not isinstance(item, str) for item in parsed)


def parse_answer(text: str) -> list:
    r"""An answer text as math-verify's parse result: sympy objects and the matched text.

    The text is read as LaTeX (`$...$`: `\frac12`, `[1,2)`, `(1, 2)`, `\{1,2\}`, `50\%`,
    `3\pi`), or first as plain text when it has words or `**` (`18 dollars`, `The answer is 1/2`,
    `9**2`), each falling back to the other; when neither gives a math object, the text itself,
    so that equal strings still match. Empty for text longer than MAX_ANSWER_CHARS.
    """
    text = text.strip()
    if not text or len(text) > MAX_ANSWER_CHARS:
        return []
    library = math_verify()
    readings = [f"${text}$", text]
    if _reads_as_plain_text(text):
        readings.reverse()
    for reading in readings:
        parsed = library.parse(reading, parsing_timeout=None)
        if _has_math_object(parsed):
            return parsed
    return [text]


def equivalent(reference: str, predicted: str | None) -> bool:
    """math-verify's equivalence of a predicted answer to the reference (not symmetric: the
    reference is math-verify's gold). No predicted answer is never equivalent."""
    if predicted is None:
        return False
    gold, target = parse_answer(str(reference)), parse_answer(predicted)
    if not gold or not target:
        return False
    return bool(math_verify().verify(gold, target, timeout_seconds=None))


def check_example(example: dict) -> None:
    """Raises when `example` has no reference `answer`; imports math-verify (see math_verify)."""
    answer = example.get("answer")
    if answer is None or not str(answer).strip():
        raise KeyError(f"a math example needs a non-empty reference 'answer' "
                       f"(fields: {sorted(example)})")
    math_verify()


def verify(completion, example: dict) -> bool:
    r"""The completion's final answer (the last `<answer>`, else the last `\boxed{}`) is
    equivalent to the example's reference `answer`."""
    return equivalent(str(example["answer"]), extract_answer(completion))


def reward(completion, example: dict) -> float:
    """1 for an equivalent final answer, else 0 (R1's accuracy reward)."""
    return float(verify(completion, example))


def answer_key(completion) -> str | None:
    r"""The final answer's value as sympy writes it, so that notations of one number (`\$10`,
    `10`, `10.0`, `\frac{1}{2}` and `0.5`) cast one vote in cons@k; the canonical text when it
    does not parse, None when there is no answer. Computed inside score's time limit."""
    answer = extract_answer(completion)
    if answer is None:
        return None
    value = next((item for item in parse_answer(answer) if not isinstance(item, str)), None)
    if value is None:
        return canonical_answer(answer)
    if getattr(value, "is_Float", False):  # 10.0 -> 10, 0.500000000000000 -> 1/2
        import sympy  # loaded with math_verify already: no import cost here

        value = sympy.Rational(str(value))
    return str(value)
