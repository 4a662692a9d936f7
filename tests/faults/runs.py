"""experiments/train.py (and the other scripts of the fault tests) as a user's process: start,
wait for logged steps, signal, finish, read what was logged and saved."""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12
TRAIN = ["experiments/train.py", "--config", "configs/pretrain_tiny.py:runlocal",
         f"--config.train.steps={STEPS}", "--config.train.log_every=1"]
TIMING_KEYS = {"tokens_per_s", "mfu"}


def start(workdir, *extra, script=TRAIN, env=None):
    return subprocess.Popen([sys.executable, *script, "--workdir", str(workdir), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def finish(proc, timeout=600, ok=True):
    out, _ = proc.communicate(timeout=timeout)
    if ok:
        assert proc.returncode == 0, out[-3000:]
    return out


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def metrics_by_step(workdir):
    """Each logged step's metrics (timings left out); every step must appear once."""
    logged = records(workdir)
    steps = [r["step"] for r in logged]
    assert len(steps) == len(set(steps)), f"steps logged more than once: {steps}"
    return {r["step"]: {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in logged}


def wait_for_lines(workdir, n, proc, timeout=600):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not reach {n} lines")


def checkpoint_steps(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())
