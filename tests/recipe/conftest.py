"""The :runlocal R1 pipeline, run once per test run in two processes that form one mesh, and the
helpers that run the experiment scripts on its workdir."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNLOCAL = "configs/r1_pipeline_tiny.py:runlocal"


def run_two_processes(workdir) -> dict:
    """experiments/r1_pipeline.py on the :runlocal recipe in two local processes that form one
    mesh (jax.distributed over gloo, one CPU device each), as on a cluster with shared storage."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [script("r1_pipeline.py", workdir, "--coordinator_address", f"127.0.0.1:{port}",
                    "--num_processes", "2", "--process_id", str(i),
                    env={"JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1)}) for i in range(2)]
    return {"workdir": str(workdir), "out": [finish(p) for p in procs]}


def script(name, workdir, *extra, env=None):
    args = [sys.executable, os.path.join("experiments", name), "--config", f"{RUNLOCAL}",
            "--workdir", str(workdir), *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})


def finish(proc, timeout=1200):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="session")
def two_processes(once):
    return once("r1_pipeline_two_processes", run_two_processes)


@pytest.fixture
def finished(two_processes, tmp_path):
    """A private copy of the finished pipeline's workdir (tests may change it)."""
    workdir = tmp_path / "run"
    shutil.copytree(two_processes["workdir"], workdir)
    return workdir
