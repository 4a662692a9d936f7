"""Runs with other seeds move every seed and nothing else; the paper tables of several runs show
mean ± sample standard deviation, computed here independently."""

import json
import os

import numpy as np
import pytest

from r1jax.recipe import tables
from r1jax.recipe.seeds import seed_workdir, seeded
from r1jax.train.experiment import load_config, to_dict
from r1jax.train.workdir import _flatten
from tests.recipe.conftest import ROOT

RECIPE = os.path.join(ROOT, "configs", "r1_pipeline_tiny.py")


def test_seeded_moves_every_seed_and_nothing_else():
    cfg = load_config(RECIPE)
    base, moved = _flatten(to_dict(cfg)), _flatten(to_dict(seeded(cfg, 3)))
    changed = {k for k in base if base[k] != moved[k]}
    seeds = {k for k in base if k.rsplit(".", 1)[-1] == "seed" or k.endswith("_seed")}
    assert changed == seeds
    assert {"base.train.seed", "r1_zero.sampling_seed", "r1_zero.prompt_seed",
            "cold_start_data.seed", "final_rl.eval.seed"} <= seeds
    assert all(moved[k] == base[k] + 3 for k in seeds)
    assert seeded(cfg, 0) is cfg
    assert seed_workdir("runs/x", 0) == "runs/x"
    assert seed_workdir("runs/x", 2) == os.path.join("runs/x", "seed_2")


def runs_of(values):
    """Three runs' eval.json results with the given pass@1 per stage (other metrics derived)."""
    return [{stage: {"pass@1": v[i], "cons@4": v[i] + 1, "response_length": 20.0 + i,
                     "KL to teacher": 0.01 * (i + 1), "TFLOP": 0.5}
             for i, (_, stage) in enumerate(tables.STAGE_COLUMNS + tables.DISTILL_ROWS[1:])}
            for v in values]


def test_table_of_several_runs_shows_mean_and_sample_std():
    rng = np.random.default_rng(0)
    values = rng.uniform(50, 100, (3, 10)).round(1).tolist()
    runs = runs_of(values)
    stages = tables.make_table("stages", runs).splitlines()
    pass1 = stages[2].split(" | ")
    for i, column in enumerate(pass1[1:7]):
        per_run = [v[i] for v in values]
        mean, std = np.mean(per_run), np.std(per_run, ddof=1)
        assert column.rstrip(" |") == f"{mean:.1f} ± {std:.1f}"
    # Identical values across runs: a std of zero, shown.
    assert "| response_length | 20.0 ± 0.0 | 21.0 ± 0.0 |" in stages[4]
    rows = tables.make_table("distill_vs_rl", runs).splitlines()
    assert any(r.startswith("| student + GRPO (RL alone) |") and "0.08 ± 0 | 0.5 ± 0 |" in r
               for r in rows)


def test_distillation_is_compared_with_rl_alone_seed_by_seed():
    """Several runs add each distilled student minus RL alone within a seed; one run does not."""
    values = [[50.0] * 7 + [40.0, 90.0, 30.0], [50.0] * 7 + [60.0, 70.0, 65.0],
              [50.0] * 7 + [45.0, 95.0, 50.0]]
    runs = runs_of(values)
    text = tables.make_table("distill_vs_rl", runs)
    sft = [v[8] - v[7] for v in values]  # runs_of: student_rl is column 7, student_sft 8
    logit = [v[9] - v[7] for v in values]
    row = {r.split(" | ")[0]: r for r in text.splitlines()}
    expect = f"{np.mean(sft):+.1f} ± {np.std(sft, ddof=1):.1f}"
    assert row["| SFT on R1 samples - RL alone"].split(" | ")[1:4:2] == [expect, "3 of 3 |"]
    expect = f"{np.mean(logit):+.1f} ± {np.std(logit, ddof=1):.1f}"
    assert row["| logit KD (forward KL, top-k) - RL alone"].split(" | ")[1:4:2] == [expect, "2 of 3 |"]
    assert "paired by seed" not in tables.make_table("distill_vs_rl", runs[0])


def test_one_run_is_plain_numbers_and_missing_runs_are_refused():
    runs = runs_of([[70.0] * 10, [80.0] * 10])
    assert "| pass@1 | 70.0 | 70.0 |" in tables.make_table("stages", runs[0])
    del runs[1]["r1_zero"]["pass@1"]
    with pytest.raises(ValueError, match="r1_zero pass@1: recorded by 1 of 2 runs"):
        tables.make_table("stages", runs)


def test_revisions_row_appears_only_where_the_task_records_it():
    runs = runs_of([[70.0] * 10])
    assert "revisions" not in tables.make_table("stages", runs)
    for i, (_, stage) in enumerate(tables.STAGE_COLUMNS):
        runs[0][stage]["revisions"] = 10.0 * i
    assert "| revisions | 0.0 | 10.0 | 20.0 | 30.0 | 40.0 | 50.0 |" in tables.make_table("stages", runs)



def stored_runs(recipe: str):
    """The eval.json of each seed of a README run (tests/recipe/data/), as the recipe wrote it."""
    directory = os.path.join(ROOT, "tests", "recipe", "data", recipe)
    names = sorted(os.listdir(directory))
    assert names == [f"seed_{s}.eval.json" for s in range(len(names))] and len(names) >= 3
    return [json.load(open(os.path.join(directory, name))) for name in names]


# The README's multi-seed runs and the tables it shows of each (`:checked`: R1-Zero alone).
README_RUNS = {"r1_pipeline_tiny": tables.TABLES, "r1_pipeline_tiny_direct": tables.TABLES,
               "r1_pipeline_tiny_checked": ("r1_zero_curve",)}


@pytest.mark.parametrize("recipe", sorted(README_RUNS))
def test_readme_tables_are_the_table_writer_on_the_stored_runs(recipe):
    """The README's tables cannot drift from what the code prints for the stored runs (the
    default recipe and its `:direct` and `:checked` variants)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    runs = stored_runs(recipe)
    for name in README_RUNS[recipe]:
        assert tables.make_table(name, runs) in readme, name
    if recipe == "r1_pipeline_tiny":
        assert tables.make_table("stages", runs[0]) in readme  # the main command's seed alone
