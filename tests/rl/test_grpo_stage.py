"""The GRPO stage on the training loop, as a process runs it: on 8 simulated devices with
`expert=2` it takes the expert-parallel path and logs the 1-device metrics; stopped by SIGTERM
and run again, it resumes (policy, optimizer, reference, prompts, sampling stream) and logs
exactly the metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.devices import xla_flags

pytestmark = pytest.mark.slow  # whole processes: compile, run, signal, resume
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STEPS = 6
EXACT = ("reward", "accuracy", "response_length", "num_tokens", "reward_language", "sample")
CLOSE = ("loss", "pg_loss", "kl", "grad_norm", "ratio_mean", "clip_fraction")


def start(workdir, mesh="1,1,1,1", devices=1):
    env = {**os.environ, "PYTHONPATH": ROOT,
           "XLA_FLAGS": xla_flags(devices)}
    return subprocess.Popen([sys.executable, os.path.join(HERE, "grpo_run.py"), str(workdir), mesh,
                             str(STEPS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def result(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def metrics_by_step(workdir):
    with open(os.path.join(workdir, "grpo", "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"steps logged more than once: {steps}"
    return {r["step"]: r for r in records}


def one_device_run(workdir):
    one = result(start(workdir))
    assert one["devices"] == 1 and one["expert_parallel_calls"] == 0
    return one["history"]


@pytest.fixture(scope="module")
def reference(once):
    history = once("grpo_one_device", one_device_run)
    assert [m["step"] for m in history] == list(range(1, STEPS + 1))
    assert any(abs(m["pg_loss"]) > 0 for m in history), "no policy gradient: nothing tested"
    return {m["step"]: m for m in history}


def test_expert_parallel_on_eight_devices_matches_one_device(reference, tmp_path):
    eight = result(start(tmp_path, mesh="4,1,2,1", devices=8))
    assert eight["devices"] == 8 and eight["expert_parallel_calls"] > 0
    got = metrics_by_step(tmp_path)
    for step in range(1, STEPS + 1):
        for key in EXACT:
            assert got[step][key] == reference[step][key], (step, key)
        for key in CLOSE:
            assert got[step][key] == pytest.approx(reference[step][key], rel=1e-4, abs=1e-6), (step, key)


@pytest.mark.parametrize("storm", [False, True], ids=["sigterm", "ctrl_c_then_sigterm_storm"])
def test_stopped_by_signals_then_resume_gives_identical_metrics(reference, tmp_path, storm):
    """SIGTERM once; or Ctrl-C followed by SIGTERM every 20 ms until the process is gone (some
    land while the final checkpoint, reference policy included, is written)."""
    proc = start(tmp_path)
    path = os.path.join(tmp_path, "grpo", "metrics.jsonl")
    deadline = time.time() + 300
    while not (os.path.exists(path) and sum(1 for _ in open(path)) >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT if storm else signal.SIGTERM)
    while storm and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    # After the final checkpoint is durable a later SIGTERM may end the process.
    ok = (0, -signal.SIGTERM) if storm else (0,)
    assert proc.returncode in ok and "stopped at step" in out, out[-2000:]
    stopped_at = max(metrics_by_step(tmp_path))
    assert stopped_at < STEPS, "the run finished before the signal; nothing was tested"
    assert not [d for d in os.listdir(os.path.join(tmp_path, "grpo", "checkpoints")) if "tmp" in d]
    result(start(tmp_path))
    resumed = metrics_by_step(tmp_path)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        for key in EXACT + CLOSE:
            assert resumed[step][key] == reference[step][key], (step, key)
