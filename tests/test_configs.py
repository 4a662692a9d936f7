"""Every recipe in configs/ parses, documents its command and result, and runs 2 steps with
`:runlocal` on CPU (the R1 pipeline's, in two processes: tests/recipe/test_r1_pipeline.py)."""

import glob
import os

import pytest

from r1jax.recipe.config import PipelineConfig
from r1jax.train.experiment import ExperimentConfig, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def test_there_are_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_documents_and_parses(path):
    doc = open(path).read().split('"""')[1]
    assert "Command:" in doc and "Expected" in doc, f"{path}: docstring needs the command and expected result"
    assert isinstance(load_config(f"{path}:runlocal"), (ExperimentConfig, PipelineConfig))


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.endswith("r1_pipeline_tiny.py")],
                         ids=os.path.basename)
def test_training_config_runs_locally(path, tmp_path):
    from r1jax.train.supervised import run

    history = run(load_config(f"{path}:runlocal"), str(tmp_path))
    assert [h["step"] for h in history] == [1, 2]
