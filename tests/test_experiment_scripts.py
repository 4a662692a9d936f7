"""Every experiment script honours the jax.distributed flags (through experiments/cli.py) or
refuses them with a message; none runs N unaware copies of itself."""

import glob
import os
import re
import subprocess
import sys

import pytest

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "cli.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_script_honours_or_refuses_the_distributed_flags(path):
    source = open(path).read()
    refuses = "single_process_only(" in source or "single_process=" in source
    honours = (re.search(r"from experiments\.(cli|r1_pipeline) import .*\bparse_args\b", source)
               and "single_process=" not in source)
    assert bool(honours) != refuses, f"{path}: use experiments.cli.parse_args or single_process_only"


def test_single_process_script_refuses_a_distributed_environment():
    env = {**os.environ, "JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "experiments/demo.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "runs in a single process; unset JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES" in proc.stderr


def test_distributed_flags_are_checked(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    args = ["--config", "configs/pretrain_tiny.py:runlocal", "--workdir", "/tmp/unused"]
    with pytest.raises(SystemExit, match="needs --coordinator_address"):
        cli.parse_args([*args, "--num_processes", "2"])
    with pytest.raises(SystemExit, match="--process_id=2 must be in"):
        cli.parse_args([*args, "--num_processes", "2", "--process_id", "2",
                        "--coordinator_address", "127.0.0.1:1"])


def test_bench_speculative_runs_on_a_random_model(capsys):
    """The speculative-decoding benchmark end to end on a random tiny model, 2 rows x 3 tokens:
    its table has both decodings and greedy speculative output identical to plain greedy."""
    from experiments import bench_speculative

    bench_speculative.main(["--rows", "2", "--new_tokens", "3", "--repeats", "1"])
    table = capsys.readouterr().out
    assert "| greedy |" in table and "| T=0.6, top-p 0.95 |" in table
    assert "| yes |" in table and "| NO |" not in table
