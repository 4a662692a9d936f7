"""Every recipe in configs/ parses and runs 2 steps with `:runlocal` on CPU."""

import glob
import os

import pytest

from r1jax.train.experiment import ExperimentConfig, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def test_there_are_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_runs_locally(path, tmp_path):
    cfg = load_config(f"{path}:runlocal")
    doc = open(path).read().split('"""')[1]
    assert "Command:" in doc and "Expected" in doc, f"{path}: docstring needs the command and expected result"
    if isinstance(cfg, ExperimentConfig):
        from r1jax.train.loop import run

        history = run(cfg, str(tmp_path))
        assert [h["step"] for h in history] == [1, 2]
    elif type(cfg).__name__ == "PipelineConfig":  # the R1 recipe: every stage, both tables
        from r1jax.recipe import tables
        from r1jax.recipe.config import STAGES
        from r1jax.recipe.pipeline import run

        results = run(cfg, str(tmp_path))
        assert set(results) == set(STAGES)
        for name in tables.TABLES:
            assert "pass@1" in tables.make_table(name, results)
    else:  # the R1-Zero pipeline: pretrain, evaluate, GRPO, evaluate
        from r1jax.rl.r1_zero import run

        results = run(cfg, str(tmp_path))
        assert {"base", "r1_zero"} <= set(results)
