"""A full disk (a small tmpfs where one can be mounted, and a simulated write error always) ends
the run naming the step that could not be written and the one that is kept, and a re-run resumes
from it; a data stage of the pipeline stopped by a signal keeps nothing half-made."""

import errno
import os
import signal
import subprocess

import orbax.checkpoint as ocp
import pytest

from r1jax.distill.rejection import write_sft_jsonl
from r1jax.recipe import pipeline, stages
from r1jax.train import supervised
from r1jax.train.experiment import apply_overrides, load_config
from tests.faults.runs import ROOT, checkpoint_steps, finish, records, start

RUNLOCAL = os.path.join(ROOT, "configs", "pretrain_tiny.py") + ":runlocal"


def test_write_error_names_the_step_kept_and_the_rerun_resumes(tmp_path, tokenizer, monkeypatch):
    cfg = apply_overrides(load_config(RUNLOCAL), [
        f"--config.data.tokenizer_path={tokenizer.model_path}", "--config.train.steps=4",
        "--config.train.log_every=1", "--config.train.ckpt_every=1",
        "--config.train.async_checkpoint=false"])
    save = ocp.CheckpointManager.save

    def full_disk_at_step_3(self, step, *args, **kwargs):
        if step == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk_at_step_3)
    with pytest.raises(OSError, match=r"could not write checkpoint step 3 .*No space left on device"
                                      r".*the last complete checkpoint is step 2"):
        supervised.run(cfg, str(tmp_path))
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    supervised.run(cfg, str(tmp_path))
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 4]


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated write error still runs")
    yield where
    subprocess.run(["umount", str(where)], check=True)


@pytest.mark.slow
def test_a_real_full_disk(small_disk, tokenizer):
    workdir = small_disk / "run"  # each checkpoint ~2.7 MB: the third does not fit in 8 MB
    args = [f"--config.data.tokenizer_path={tokenizer.model_path}", "--config.train.ckpt_every=1",
            "--config.train.async_checkpoint=false"]
    proc = start(workdir, *args, "--config.train.keep=100")
    out = finish(proc, timeout=300, ok=False)
    assert proc.returncode != 0
    assert "No space left on device" in out and "the last complete checkpoint is step" in out
    kept = checkpoint_steps(workdir)
    assert kept and f"the last complete checkpoint is step {kept[-1]}" in out
    # The user frees space (here: the disk grows), and the same command resumes and finishes.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    finish(start(workdir, *args, "--config.train.keep=2"))
    assert [r["step"] for r in records(workdir)] == list(range(1, 13))


def test_a_data_stage_stopped_by_a_signal_keeps_nothing(tmp_path, monkeypatch):
    cfg = load_config(os.path.join(ROOT, "configs", "r1_pipeline_tiny.py") + ":runlocal")
    run = pipeline.Pipeline(cfg, str(tmp_path))

    def interrupted(records, path):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the set is being written

    monkeypatch.setattr(pipeline, "write_sft_jsonl", interrupted)
    with pytest.raises(SystemExit, match="cold_start_data stopped by SIGTERM before it finished"):
        run.run_stage(stages.stage("cold_start_data"))
    assert "cold_start_data" not in run.results and not os.path.exists(tmp_path / "eval.json")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the stage's handler is gone


def test_a_data_set_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = str(tmp_path / "set.jsonl")
    write_sft_jsonl([{"prompt": "p", "completion": "old"}], path)

    class Boom(Exception):
        pass

    def dumps(record, **kwargs):
        if record["completion"] == "c2":
            raise Boom
        return '{"prompt": "p", "completion": "%s"}' % record["completion"]

    monkeypatch.setattr("r1jax.distill.rejection.json.dumps", dumps)
    with pytest.raises(Boom):
        write_sft_jsonl([{"prompt": "p", "completion": f"c{i}"} for i in range(4)], path)
    assert open(path).read() == '{"prompt": "p", "completion": "old"}\n'  # the old set, intact
