"""A non-finite step stops the run (or is skipped and counted) and never reaches a checkpoint;
a resume refuses another model or data before anything is written, names what differs, and
allows the rest; metrics.jsonl holds each step once after a resume."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from r1jax.train import supervised
from r1jax.train.checkpoint import load_params
from r1jax.train.experiment import apply_overrides, load_config
from tests.faults.runs import ROOT, checkpoint_steps, finish, records, start

RUNLOCAL = os.path.join(ROOT, "configs", "pretrain_tiny.py") + ":runlocal"


def config(tokenizer, *overrides):
    cfg = load_config(RUNLOCAL)
    return apply_overrides(cfg, [f"--config.data.tokenizer_path={tokenizer.model_path}",
                                 "--config.train.log_every=1", *overrides])


def all_finite(tree) -> bool:
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(tree))


@pytest.mark.slow
def test_a_huge_learning_rate_stops_the_run_before_a_nonfinite_checkpoint(tmp_path, tokenizer):
    proc = start(tmp_path, "--config.optim.lr=1e30", "--config.train.ckpt_every=1",
                 f"--config.data.tokenizer_path={tokenizer.model_path}")
    out = finish(proc, timeout=300, ok=False)
    assert proc.returncode != 0, out[-2000:]
    assert "is not finite (" in out and "it was not applied and the run stops" in out
    saved = checkpoint_steps(tmp_path)
    assert saved and max(saved) < 12
    cfg = load_config(RUNLOCAL)
    params = load_params(cfg.model, str(tmp_path / "checkpoints"))
    assert all_finite(params)  # the newest checkpoint is finite, and it was kept
    logged = records(tmp_path)
    assert all(np.isfinite(r["loss"]) for r in logged)  # the bad step was not logged as trained


def test_skip_policy_drops_and_counts_nonfinite_steps(tmp_path, tokenizer):
    cfg = config(tokenizer, "--config.optim.lr=1e30", "--config.train.steps=5",
                 "--config.train.nonfinite=skip")
    history = supervised.run(cfg, str(tmp_path))
    assert history[-1]["step"] == 5 and history[-1]["skipped_steps"] >= 1
    assert all_finite(load_params(cfg.model, str(tmp_path / "checkpoints")))


def test_resume_refuses_another_model_or_data_and_allows_the_rest(tmp_path, tokenizer):
    cfg = config(tokenizer, "--config.train.steps=2", "--config.train.ckpt_every=1")
    supervised.run(cfg, str(tmp_path))
    saved = open(tmp_path / "config.json").read()
    with pytest.raises(ValueError, match=r"model.hidden_size: 64 -> 32.*another workdir to start fresh"):
        supervised.run(dataclasses.replace(cfg, model=cfg.model.replace(hidden_size=32)), str(tmp_path))
    countdown = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task="countdown", mode="sft"))
    with pytest.raises(ValueError, match=r"data.mode: 'pretrain' -> 'sft'; data.task: 'corpus' -> 'countdown'"):
        supervised.run(countdown, str(tmp_path))
    assert open(tmp_path / "config.json").read() == saved  # never overwritten by a refused resume

    # The interrupted run had logged a step after its last checkpoint: it is logged once.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=4),
                                 optim=dataclasses.replace(cfg.optim, lr=1e-3))
    supervised.run(longer, str(tmp_path))
    steps = [r["step"] for r in records(tmp_path)]
    assert steps == [1, 2, 3, 4] and -1.0 not in [r["loss"] for r in records(tmp_path)]
    assert json.load(open(tmp_path / "config.json"))["optim"]["lr"] == 1e-3

    # Checkpoints made before a data field existed: the new field cannot have been set otherwise.
    saved = json.load(open(tmp_path / "config.json"))
    del saved["data"]["fields"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    supervised.run(dataclasses.replace(longer, train=dataclasses.replace(longer.train, steps=5)),
                   str(tmp_path))
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 4, 5]


def test_config_mistakes_fail_at_load_naming_the_field():
    cases = {"--config.train.steps=0": r"--config.train.steps=0: TrainConfig.steps=0 must be",
             "--config.train.log_every=0": "TrainConfig.log_every=0",
             "--config.train.ckpt_every=0": "TrainConfig.ckpt_every=0",
             "--config.train.keep=0": "TrainConfig.keep=0",
             "--config.train.grad_accum=0": "TrainConfig.grad_accum=0",
             "--config.data.seq_len=0": "DataConfig.seq_len=0",
             "--config.optim.lr=nan": "OptimConfig.lr=nan must be a finite number > 0",
             "--config.train.nonfinite=ignore": r"must be one of \('stop', 'skip'\)",
             "--config.mesh.data=0": "MeshConfig.data=0 must be a positive size or -1"}
    for override, message in cases.items():
        with pytest.raises(ValueError, match=message):
            apply_overrides(load_config(RUNLOCAL), [override])
    with pytest.raises(ValueError, match=r"unknown recipe argument 'runlcoal'; valid: runlocal"):
        load_config(RUNLOCAL.replace("runlocal", "runlcoal"))
    with pytest.raises(ValueError, match=r"README.md is not a recipe"):
        load_config(os.path.join(ROOT, "README.md"))
    with pytest.raises(ValueError, match=r"is not a recipe: it defines no get_config"):
        load_config(os.path.join(ROOT, "experiments", "cli.py"))


def test_sft_rows_with_nothing_to_train_on_are_skipped_and_reported(tmp_path, tokenizer):
    long_prompt = "Compute " + " + ".join(["1"] * 60) + "."  # no completion token fits in 64
    rows = [{"prompt": long_prompt if i in (2, 5) else f"Compute {i}+1.", "answer": str(i + 1)}
            for i in range(8)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(tokenizer, f"--config.data.task={path}", "--config.data.mode=sft",
                 "--config.data.seq_len=64", "--config.data.batch_size=4", "--config.train.steps=2")
    history = supervised.run(cfg, str(tmp_path / "run"))
    assert history[-1]["skipped_rows"] >= 2
