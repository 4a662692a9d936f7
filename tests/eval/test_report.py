"""The evaluation report: the summary's metrics against their definitions computed here by
other means (exact binomials), and the files written."""

import json
import math

import pytest

from r1jax.eval.evaluate import summarize
from r1jax.eval.report import PROBLEMS_FILE, SUMMARY_FILE, TABLE_FILE, write_report


def record(correct, answers, lengths):
    return {"prompt": "p", "texts": ["t"] * len(correct), "correct": correct, "answers": answers,
            "lengths": lengths}


RECORDS = [
    record([True, False, False, False], ["7", "8", "8", None], [3, 4, 5, 6]),
    record([False, False, False, False], [None, None, None, None], [2, 2, 2, 2]),
    record([True, True, False, True], ["1", "1", "2", "1"], [1, 1, 1, 1]),
]


def exact_pass_at_k(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def test_summary_matches_the_definitions():
    s = summarize(RECORDS, pass_k=(1, 2, 4))
    assert s["pass@1"] == pytest.approx(100 * (1 / 4 + 0 + 3 / 4) / 3)
    assert s["pass@2"] == pytest.approx(100 * sum(exact_pass_at_k(4, c, 2) for c in (1, 0, 3)) / 3)
    assert s["pass@4"] == pytest.approx(100 * 2 / 3)
    # Votes: "8" wins problem 0 (wrong), nothing votes in problem 1, "1" wins problem 2 (right).
    assert s["cons@4"] == pytest.approx(100 / 3)
    assert s["response_length"] == pytest.approx((18 + 8 + 4) / 12)
    assert s["problems"] == 3
    assert "revisions" not in s  # these records' task has no notion of revising a step


def test_summary_counts_the_share_of_samples_that_revise():
    revised = [[True, False, False, False], [False, False, False, False], [True, True, False, True]]
    s = summarize([{**r, "revised": v} for r, v in zip(RECORDS, revised)])
    assert s["revisions"] == pytest.approx(100 * 4 / 12)


def test_report_files(tmp_path):
    s = summarize(RECORDS, pass_k=(2,))
    write_report(str(tmp_path), RECORDS, s, title="tiny on arithmetic",
                 about={"checkpoint": "/ckpt", "sampling": "k=4"})
    lines = (tmp_path / PROBLEMS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == RECORDS
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary == {"checkpoint": "/ckpt", "sampling": "k=4", **s}
    table = (tmp_path / TABLE_FILE).read_text()
    assert table.startswith("# tiny on arithmetic\n\n| pass@1 | pass@2 | cons@4 | response_length")
    assert f"| {s['pass@1']:.1f} | {s['pass@2']:.1f} | {s['cons@4']:.1f} |" in table
    assert table.endswith("\n- checkpoint: /ckpt\n- sampling: k=4\n")
    assert not list(tmp_path.glob("*.partial"))
