"""An evaluation's files: one JSON line per problem (its samples and verdicts), the summary as
JSON, and a markdown table of the summary. Each file is written whole or not at all (a partial
file is renamed into place), so an interrupted run never leaves a truncated report."""

from __future__ import annotations

import json
import os

from r1jax.eval.tables import format_table

PROBLEMS_FILE = "problems.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "eval.md"


def _write_atomically(path: str, text: str) -> None:
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)


def summary_columns(summary: dict) -> list[str]:
    """pass@1, the pass@k columns in k order, cons@k, then the rest."""
    metrics = sorted((c for c in summary if c.startswith("pass@")), key=lambda c: int(c[5:]))
    metrics += [c for c in summary if c.startswith("cons@")]
    return metrics + [c for c in ("response_length", "revisions", "problems") if c in summary]


def write_report(out_dir: str, records: list[dict], summary: dict, *, title: str,
                 about: dict | None = None) -> None:
    """`out_dir`/problems.jsonl, summary.json ({**about, **summary}) and eval.md (`title`, the
    summary table, and `about` as a list of what was evaluated and how)."""
    os.makedirs(out_dir, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    _write_atomically(os.path.join(out_dir, PROBLEMS_FILE), lines)
    about = dict(about or {})
    _write_atomically(os.path.join(out_dir, SUMMARY_FILE),
                      json.dumps({**about, **summary}, indent=2, default=str) + "\n")
    table = format_table([summary], summary_columns(summary))
    setup = "".join(f"- {k}: {v}\n" for k, v in about.items())
    text = f"# {title}\n\n{table}" + (f"\n{setup}" if setup else "")
    _write_atomically(os.path.join(out_dir, TABLE_FILE), text)
