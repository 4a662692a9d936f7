"""Markdown tables for results, laid out like the paper tables they are compared with."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def mean_std(values: Sequence[float], digits: str = ".1f") -> str:
    """One value as is; several as `mean ± std` (sample standard deviation), both in `digits`
    (a "+" in it signs the mean only)."""
    if len(values) == 1:
        return format(values[0], digits)
    spread = digits.replace("+", "")
    return f"{float(np.mean(values)):{digits}} ± {float(np.std(values, ddof=1)):{spread}}"


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        text = float_format.format(value)
    else:
        text = str(value)
    # A "|" would end the cell early; a newline would end the row.
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, float_format: str = "{:.1f}"
) -> str:
    """GitHub markdown table: one row per mapping, `columns` as keys and headers, in order.

    Floats use `float_format` (default one decimal, as in the R1 tables); missing keys and None
    give empty cells; columns whose values are all numbers are right-aligned.
    """
    if not columns:
        raise ValueError("columns is empty: name at least one column")
    cells = [[_cell(row.get(col), float_format) for col in columns] for row in rows]

    def numeric(col):
        values = [row.get(col) for row in rows if row.get(col) is not None]
        return bool(values) and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
        )

    header = [_cell(col, float_format) for col in columns]
    rule = ["---:" if numeric(col) else "---" for col in columns]
    lines = [header, rule, *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"
