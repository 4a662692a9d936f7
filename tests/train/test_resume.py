"""experiments/train.py as a user runs it: SIGKILL or SIGTERM mid-run, re-run, and the metrics
of every step equal an uninterrupted run; two processes on localhost form one mesh."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # whole processes: compile, run, signal, resume
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["--config", "configs/pretrain_tiny.py:runlocal", "--config.train.steps=12",
        "--config.train.log_every=1", "--config.train.ckpt_every=3"]
TIMING_KEYS = {"tokens_per_s", "mfu"}


def start(workdir, *extra, env=None):
    return subprocess.Popen([sys.executable, "experiments/train.py", *ARGS, "--workdir", str(workdir), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def metrics_by_step(workdir):
    """Last record of each step (a resumed run logs the steps after its checkpoint again)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records}


def wait_for_lines(workdir, n, proc, timeout=600):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.02)
    raise TimeoutError(f"{path} did not reach {n} lines")


def uninterrupted(workdir):
    finish(start(workdir))
    return list(metrics_by_step(workdir).values())


@pytest.fixture(scope="module")
def reference(once):
    ref = {m["step"]: m for m in once("train_uninterrupted", uninterrupted)}
    assert sorted(ref) == list(range(1, 13))
    return ref


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupt_and_resume_gives_identical_metrics(reference, tmp_path, sig):
    proc = start(tmp_path)
    wait_for_lines(tmp_path, 5, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 0 and "stopping at step" in out, out[-2000:]
    else:
        assert proc.returncode == -signal.SIGKILL
    killed_at = max(metrics_by_step(tmp_path))
    assert killed_at < 12, "the run finished before the signal; nothing was tested"
    finish(start(tmp_path))
    resumed = metrics_by_step(tmp_path)
    assert sorted(resumed) == list(range(1, 13))
    for step in range(1, 13):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


def test_two_processes_form_one_mesh(reference, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One workdir, as on a cluster's shared storage: orbax's multi-process save coordinates there.
    procs = [start(tmp_path, "--coordinator_address", f"127.0.0.1:{port}",
                   "--num_processes", "2", "--process_id", str(i),
                   "--config.data.tokenizer_path=", env={"JAX_PLATFORMS": "cpu"}) for i in range(2)]
    for p in procs:
        finish(p)
    two = metrics_by_step(tmp_path)  # written by process 0
    for step in range(1, 13):
        assert two[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-5), step
