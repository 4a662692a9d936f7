"""R1-Zero's curve table: first vs last GRPO steps of each run's rollouts, recomputed here from
synthetic metrics logs, and the plot of several seeds."""

import numpy as np
import pytest

from r1jax.recipe import tables
from r1jax.recipe.curves import plot_seed_curves, summarize_curve


def log(accuracy, length, revisions=None):
    return [{"step": i + 1, "accuracy": a, "response_length": n,
             **({} if revisions is None else {"revisions": revisions[i]})}
            for i, (a, n) in enumerate(zip(accuracy, length))]


def test_summary_averages_each_end_and_keeps_the_last_record_of_a_repeated_step():
    records = log(np.linspace(0.1, 0.6, 30), np.arange(30.0), np.arange(30.0) * 2)
    records.insert(5, {**records[4], "accuracy": 99.0})  # step 5 logged twice: the last counts
    records[5], records[4] = records[4], records[5]
    s = summarize_curve(records, window=10)
    assert s["steps"] == 30
    assert s["accuracy"]["first"] == pytest.approx(100 * np.mean(np.linspace(0.1, 0.6, 30)[:10]))
    assert s["response_length"] == {"first": pytest.approx(4.5), "last": pytest.approx(24.5)}
    assert s["revisions"]["last"] == pytest.approx(49.0)
    assert "revisions" not in summarize_curve(log([0.5] * 3, [1.0] * 3))


def test_curve_table_over_seeds():
    runs = [{"r1_zero": {"rollouts": summarize_curve(log(np.full(20, a), np.linspace(n0, n1, 20)),
                                                     window=5)}}
            for a, n0, n1 in ((0.2, 40, 60), (0.4, 50, 45), (0.3, 30, 80))]
    table = tables.make_table("r1_zero_curve", runs)
    # lengths first/last 5 steps per run, then mean ± sample std of their change
    changes = []
    for n0, n1 in ((40, 60), (50, 45), (30, 80)):
        ys = np.linspace(n0, n1, 20)
        changes.append(ys[-5:].mean() - ys[:5].mean())
    assert f"{np.mean(changes):+.1f} ± {np.std(changes, ddof=1):.1f} | 2 of 3 |" in table
    assert "| rollout accuracy (%) | 30.0 ± 10.0 | 30.0 ± 10.0 | +0.0 ± 0.0 | 0 of 3 |" in table
    assert "revise" not in table  # not logged by these runs


def test_plot_of_several_seeds(tmp_path):
    per_seed = [log(np.random.default_rng(s).uniform(0, 1, 12), np.arange(12.0), [1.0] * 12)
                for s in range(3)]
    plot_seed_curves(per_seed, str(tmp_path / "curves.png"), title="t")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
