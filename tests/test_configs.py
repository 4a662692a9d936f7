"""Every recipe in configs/ parses and runs 2 steps with `:runlocal` on CPU. The R1 pipeline's
runs in two local processes that form one mesh (jax.distributed over gloo), as on a cluster:
every stage, both tables, files written by process 0 only; experiments/r1_zero.py then reuses
its first two stages."""

import glob
import json
import os
import socket
import subprocess
import sys

import pytest

from r1jax.recipe.config import PipelineConfig
from r1jax.recipe.stages import STAGE_NAMES
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


def script(name, workdir, *extra, env=None):
    args = [sys.executable, os.path.join("experiments", name), "--config",
            "configs/r1_pipeline_tiny.py:runlocal", "--workdir", str(workdir), *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})


def finish(proc, timeout=1200):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_r1_pipeline_runs_locally_in_two_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [script("r1_pipeline.py", tmp_path, "--coordinator_address", f"127.0.0.1:{port}",
                    "--num_processes", "2", "--process_id", str(i),
                    env={"JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}) for i in range(2)]
    out = [finish(p) for p in procs]
    results = json.load(open(tmp_path / "eval.json"))
    assert set(results) == set(STAGE_NAMES)
    for table in ("stages", "distill_vs_rl"):
        text = open(tmp_path / f"table_{table}.md").read()
        assert "pass@1" in text and text.split("\n\n", 1)[1] in out[0]
        assert "pass@1" not in out[1]  # process 1 writes and prints nothing shared
    assert "=== base" in out[0] and "===" not in out[1]
    # Both processes ran every stage on the 2-device mesh: the stages' metrics are there once.
    metrics = [json.loads(line) for line in open(tmp_path / "r1_zero" / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [1, 2]
    assert (tmp_path / "data" / "distill_data.jsonl").read_text().count("\n") >= 1

    # R1-Zero alone is the pipeline's first two stages: on this workdir it only reports them.
    single = finish(script("r1_zero.py", tmp_path))
    assert "| base |" in single and "| r1_zero |" in single and "===" not in single
    assert (tmp_path / "reward_accuracy.png").exists()
