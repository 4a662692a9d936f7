"""Rules for config fields, checked when a config is built (and on every `dataclasses.replace`),
so a bad value fails at load with its name, its value and what it must be, not later inside a
compiled step.

    check_fields(self, steps=at_least(1), lr=positive(), schedule=one_of("cosine", "constant"))
"""

from __future__ import annotations

import math
from typing import Any, Callable

Rule = tuple[Callable[[Any], bool], str]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Rule:
    return (lambda v: _number(v) and v >= low), f"must be a finite number >= {low}"


def positive() -> Rule:
    return (lambda v: _number(v) and v > 0), "must be a finite number > 0"


def between(low: float, high: float, *, include_low: bool = True, include_high: bool = True) -> Rule:
    def ok(v):
        return (_number(v) and (v >= low if include_low else v > low)
                and (v <= high if include_high else v < high))
    brackets = ("[" if include_low else "(") + f"{low}, {high}" + ("]" if include_high else ")")
    return ok, f"must lie in {brackets}"


def one_of(*choices) -> Rule:
    return (lambda v: v in choices), f"must be one of {choices}"


def optional(rule: Rule) -> Rule:
    ok, text = rule
    return (lambda v: v is None or ok(v)), f"must be None or {text.removeprefix('must be ')}"


def check_fields(cfg, **rules: Rule) -> None:
    """Raise ValueError naming the first field of `cfg` whose value breaks its rule."""
    for name, (ok, text) in rules.items():
        value = getattr(cfg, name)
        if not ok(value):
            raise ValueError(f"{type(cfg).__name__}.{name}={value!r} {text}")
