"""A process stuck outside the step (a hung data pipeline) still ends within a bounded time of
SIGTERM, keeping its last complete checkpoint; a second run into a live workdir is refused with a
message naming the holder, and the lock of a dead run is taken over."""

import os
import signal
import time

import pytest

from r1jax.train.checkpoint import Checkpointer
from r1jax.train.workdir import WorkdirLock
from tests.faults.runs import ROOT, checkpoint_steps, finish, start, wait_for_lines

pytestmark = pytest.mark.slow  # whole processes
HUNG = ["tests/faults/hung_run.py"]


def start_hung(workdir, hang_after=3, grace_s=2):
    return start(workdir, script=[*HUNG, str(workdir), str(hang_after), str(grace_s)],
                 env={"PYTHONPATH": ROOT})


def test_sigterm_ends_a_process_stuck_outside_the_step(tmp_path):
    proc = start_hung(tmp_path)
    wait_for_lines(tmp_path, 3, proc)
    while 3 not in checkpoint_steps(tmp_path):  # step 3's checkpoint is written in the background
        assert proc.poll() is None, finish(proc, timeout=60, ok=False)[-2000:]
        time.sleep(0.01)
    time.sleep(0.5)  # the batch source is now asleep
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    out = finish(proc, timeout=60, ok=False)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert time.time() - sent < 30
    assert "no step ended within 2 s of the signal" in out
    assert checkpoint_steps(tmp_path) and checkpoint_steps(tmp_path)[-1] == 3
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), save_every=1, keep=3, async_save=False)
    assert ckpt.latest_step() == 3
    ckpt.close()


def test_second_run_into_a_live_workdir_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    holder = start_hung(tmp_path)
    wait_for_lines(tmp_path, 3, holder)
    second = start(tmp_path, "--config.train.steps=4")
    out = finish(second, timeout=120, ok=False)
    assert second.returncode != 0
    assert "is in use by host" in out and f"pid {holder.pid}" in out, out[-2000:]
    holder.kill()  # dies holding the lock: the kernel releases it
    finish(holder, timeout=60, ok=False)
    out = finish(start(tmp_path, "--config.train.steps=5", "--config.train.log_every=1",
                       "--config.train.ckpt_every=1"))
    assert "step 5" in out


def test_workdir_lock_in_one_process(tmp_path):
    with WorkdirLock(str(tmp_path)):
        with pytest.raises(RuntimeError, match=rf"in use by host \S+ pid {os.getpid()} since"):
            with WorkdirLock(str(tmp_path)):
                pass
    with WorkdirLock(str(tmp_path)):  # released: free again
        pass
    with WorkdirLock(str(tmp_path), enabled=False):  # a non-main process takes no lock
        pass
