r"""Layouts of users' data sets: which fields hold the problem, the reference answer, the solution.

Recognised by their field names, without flags:
  native  `prompt` + `completion` and/or `answer`: r1jax's own records (rejection samples,
          hand-written sets), read as they are and judged by their `task` (or their `answer`).
  gsm8k   `question` + `answer`, the answer ending in `#### <number>` (GSM8K): the reference is
          the text after the last `####`, the worked solution before it (calculator annotations
          `<<48/2=24>>` removed) is the reasoning.
  math    `problem` + `solution` (Hendrycks MATH, MATH-500): the reference is the content of
          the solution's last `\boxed{...}`, nested braces included; the solution is the reasoning.
Any other layout names its fields with a `FieldMap` (prompt_field plus answer_field and/or
solution_field; a solution alone gives its reference by `####` or the last `\boxed{}` as above).

gsm8k, math and mapped rows become `math` task records (r1jax/data/tasks/math_answers.py):
`task`, `prompt` (the user message), `answer` (the reference) and, when the set has one,
`reasoning`, which makes the row an SFT example too (`chat.completion_of`). A row whose
reference cannot be read (a GSM8K answer with no `####`, a solution with no `\boxed{}`) is
skipped and counted (`UnreadableReference`); a row without a field its layout needs is an error
naming the file, the row and the field.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

from r1jax.data.tasks import math_answers
from r1jax.data.tasks.answers import extract_boxed

NATIVE, GSM8K, MATH, MAPPED = "native", "gsm8k", "math", "mapped"
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")  # GSM8K's "48/2 = <<48/2=24>>24"
_FLAGS_HINT = ("name them with FieldMap(prompt_field=..., answer_field=... and/or "
               "solution_field=...): config flags data.fields.* (SFT), <stage>.fields.* (GRPO), "
               "eval.fields.* (evaluation)")


class UnreadableReference(ValueError):
    """A row's reference answer cannot be read from its solution: the row is skipped."""


@dataclasses.dataclass(frozen=True)
class FieldMap:
    """The fields of a layout that is not recognised by its names; all empty = recognise it.

    prompt_field: the problem text (the user message). answer_field: the reference answer as
    is. solution_field: a worked solution, the reasoning; without answer_field the reference is
    read from it (after `####`, else the last `\\boxed{}`).
    """

    prompt_field: str = ""
    answer_field: str = ""
    solution_field: str = ""

    def check(self) -> None:
        """Raises unless the map names the prompt and where the reference is. Checked when a
        file is read, not when the map is built: flags set one field at a time."""
        if self.mapped and not self.prompt_field:
            raise ValueError(f"{self}: answer_field/solution_field need prompt_field too (the "
                             "field that holds the problem)")
        if self.prompt_field and not (self.answer_field or self.solution_field):
            raise ValueError(f"{self}: prompt_field={self.prompt_field!r} needs answer_field or "
                             "solution_field (where the reference answer is)")

    @property
    def mapped(self) -> bool:
        return bool(self.prompt_field or self.answer_field or self.solution_field)

    def needed(self) -> tuple[str, ...]:
        return tuple(f for f in (self.prompt_field, self.answer_field, self.solution_field) if f)


def recognise_layout(fields, source: str, field_map: FieldMap = FieldMap()) -> str:
    """The layout of a data set whose (first) row has `fields`; `source` is named in errors."""
    fields = set(fields)
    if field_map.mapped:
        field_map.check()
        missing = [f for f in field_map.needed() if f not in fields]
        if missing:
            raise ValueError(f"{source}: the mapped fields {missing} are not in the data "
                             f"(fields found: {sorted(fields)})")
        return MAPPED
    if "prompt" in fields:
        return NATIVE
    if {"question", "answer"} <= fields:
        return GSM8K
    if {"problem", "solution"} <= fields:
        return MATH
    raise ValueError(
        f"{source}: unrecognised layout, fields found: {sorted(fields)}; expected prompt + "
        "completion/answer (r1jax), question + answer (GSM8K) or problem + solution (MATH); "
        f"for other fields {_FLAGS_HINT}")


# -------------------------------------------------------------------------------- references

def gsm8k_reference(answer: str) -> tuple[str, str]:
    """(reference, reasoning) of a GSM8K answer: the text after the last `####`, and the
    solution before it without calculator annotations."""
    reasoning, marker, reference = answer.rpartition("####")
    if not marker:
        raise UnreadableReference("the answer has no '#### <number>' line")
    if not reference.strip():
        raise UnreadableReference("nothing follows '####' in the answer")
    return reference.strip(), _CALCULATOR_ANNOTATION.sub("", reasoning).strip()


def boxed_reference(solution: str) -> str:
    r"""The content of a solution's last `\boxed{...}` (nested braces included)."""
    reference = extract_boxed(solution)
    if reference is None:
        raise UnreadableReference("the solution has no complete \\boxed{...}")
    if not reference:
        raise UnreadableReference("the solution's last \\boxed{} is empty")
    return reference


def solution_reference(solution: str) -> tuple[str, str]:
    r"""(reference, reasoning) of a worked solution: GSM8K's `####` if it has one, else its last
    `\boxed{}` (the solution is then the reasoning as it is)."""
    if "####" in solution:
        return gsm8k_reference(solution)
    return boxed_reference(solution), solution.strip()


# -------------------------------------------------------------------------------- records

def _text(row: Mapping, field: str, where: str) -> str:
    value = row.get(field)
    if value is None:
        raise ValueError(f"{where}: missing field {field!r} (fields: {sorted(row)})")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"{where}: field {field!r} is a {type(value).__name__}, not text")
    return str(value)


def _math_record(prompt: str, reference: str, reasoning: str) -> dict:
    record = {"task": math_answers.TASK, "prompt": prompt, "answer": reference}
    if reasoning:
        record["reasoning"] = reasoning
    return record


def gsm8k_record(row: Mapping, where: str) -> dict:
    reference, reasoning = gsm8k_reference(_text(row, "answer", where))
    return _math_record(_text(row, "question", where), reference, reasoning)


def math_record(row: Mapping, where: str) -> dict:
    solution = _text(row, "solution", where)
    return _math_record(_text(row, "problem", where), boxed_reference(solution), solution.strip())


def mapped_record(row: Mapping, where: str, field_map: FieldMap) -> dict:
    prompt = _text(row, field_map.prompt_field, where)
    solution = _text(row, field_map.solution_field, where) if field_map.solution_field else ""
    if field_map.answer_field:
        return _math_record(prompt, _text(row, field_map.answer_field, where).strip(),
                            solution.strip())
    return _math_record(prompt, *solution_reference(solution))


def record_maker(layout: str, field_map: FieldMap,
                 check_native: Callable[[Any, str], dict]) -> Callable[[Any, str], dict]:
    """`make(row, where) -> record` for `layout`; native rows go through `check_native`."""
    makers = {NATIVE: check_native, GSM8K: gsm8k_record, MATH: math_record,
              MAPPED: lambda row, where: mapped_record(row, where, field_map)}

    def make(row: Any, where: str) -> dict:
        if layout != NATIVE and not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected a JSON object (a record with named fields), "
                             f"got {type(row).__name__}")
        return makers[layout](row, where)
    return make
