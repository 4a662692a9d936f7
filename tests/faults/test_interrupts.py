"""experiments/train.py as a user runs it: SIGKILL at several points (also in the middle of a
checkpoint save), SIGTERM, and Ctrl-C twice in a row (the second during the final save); each time
the re-run resumes and logs every step once, with exactly the metrics of an uninterrupted run.
Two processes on localhost form one mesh and log the 1-process losses."""

import os
import signal
import socket
import time

import pytest

from tests.faults.runs import STEPS, checkpoint_steps, finish, metrics_by_step, start, wait_for_lines

pytestmark = pytest.mark.slow  # whole processes: compile, run, signal, resume


def uninterrupted(workdir):
    finish(start(workdir, "--config.train.ckpt_every=3"))
    return list(metrics_by_step(workdir).values())


@pytest.fixture(scope="module")
def reference(once):
    ref = {m["step"]: m for m in once("train_uninterrupted", uninterrupted)}
    assert sorted(ref) == list(range(1, STEPS + 1))
    return ref


def resume_and_compare(workdir, reference, *extra):
    finish(start(workdir, *extra))
    resumed = metrics_by_step(workdir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupt_and_resume_gives_identical_metrics(reference, tmp_path, sig):
    proc = start(tmp_path, "--config.train.ckpt_every=3")
    wait_for_lines(tmp_path, 5, proc)
    proc.send_signal(sig)
    out = finish(proc, timeout=120, ok=False)
    if sig == signal.SIGTERM:
        assert proc.returncode == 0 and "stopped at step" in out, out[-2000:]
    else:
        assert proc.returncode == -signal.SIGKILL
    killed_at = max(metrics_by_step(tmp_path))
    assert killed_at < STEPS, "the run finished before the signal; nothing was tested"
    resume_and_compare(tmp_path, reference, "--config.train.ckpt_every=3")


@pytest.mark.parametrize("after", [2, 6, 9])
def test_kill_during_checkpoint_saves(reference, tmp_path, after):
    """A save every step, asynchronously: SIGKILL lands while one is being written."""
    proc = start(tmp_path, "--config.train.ckpt_every=1")
    wait_for_lines(tmp_path, after, proc)
    proc.kill()
    finish(proc, timeout=120, ok=False)
    assert max(metrics_by_step(tmp_path)) < STEPS, "the run finished before the kill"
    resume_and_compare(tmp_path, reference, "--config.train.ckpt_every=1")


def test_signals_during_the_final_save_cannot_break_it(reference, tmp_path):
    """Ctrl-C, then SIGTERM every 20 ms until the process is gone: some land while the step ends,
    some while the final checkpoint is written, some after. The run reports the step it saved only
    once that checkpoint is complete, and it is (no half-written directory)."""
    proc = start(tmp_path, "--config.train.ckpt_every=100")
    wait_for_lines(tmp_path, 4, proc)
    proc.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
    out = finish(proc, timeout=120, ok=False)
    # Once the checkpoint is durable the handlers are gone: a later SIGTERM may end the process.
    assert proc.returncode in (0, -signal.SIGTERM) and "stopped at step" in out, out[-2000:]
    stopped = int(out.split("stopped at step ")[1].split(";")[0])
    assert stopped < STEPS, "the run finished before the signal"
    assert checkpoint_steps(tmp_path)[-1] == stopped  # the final save is complete ...
    assert not [d for d in os.listdir(tmp_path / "checkpoints") if "tmp" in d]  # ... and whole
    resume_and_compare(tmp_path, reference, "--config.train.ckpt_every=100")


def test_two_processes_form_one_mesh(reference, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One workdir, as on a cluster's shared storage: orbax's multi-process save coordinates there.
    procs = [start(tmp_path, "--config.train.ckpt_every=3", "--coordinator_address",
                   f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i),
                   "--config.data.tokenizer_path=", env={"JAX_PLATFORMS": "cpu"}) for i in range(2)]
    for p in procs:
        finish(p)
    two = metrics_by_step(tmp_path)  # written by process 0
    for step in range(1, STEPS + 1):
        assert two[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-5), step
