"""Pipeline stages started from Hugging Face checkpoints: `--config.base.hf_checkpoint=DIR` (the
teacher) and `--config.student_base.hf_checkpoint=DIR` (the student).

A pretraining stage that names a checkpoint is imported instead of trained: the checkpoint's
weights are written, on the stage's mesh, as the stage's own checkpoint at step 0
(`<stage>/checkpoints`, params at ("train", "params")), so every stage downstream (GRPO, SFT,
rejection sampling, distillation teacher and student, evaluation, export) reads it as it reads a
trained stage. It is evaluated and recorded in eval.json like any stage (steps: 0). The
teacher's checkpoint also gives the tokenizer every stage shares (with its chat template); a
student's checkpoint must then hold that same vocabulary, since distillation compares the two
models token by token.
"""

from __future__ import annotations

import json
import os

from r1jax import data as rdata
from r1jax import models
from r1jax.distributed import on_main
from r1jax.recipe import stages as table
from r1jax.sharding import make_mesh, param_shardings
from r1jax.train.checkpoint import (abstract_with_shardings, hf_params, latest_step,
                                    write_params_checkpoint)
from r1jax.train.experiment import to_dict
from r1jax.train.workdir import check_resume


def checkpoint_of(cfg, name: str) -> str:
    """The HF directory stage `name` starts from, or "" (trained, or a data stage)."""
    return getattr(getattr(cfg, name), "hf_checkpoint", "") or ""


def is_imported(cfg, s: table.Stage) -> bool:
    return s.kind == table.PRETRAIN and bool(checkpoint_of(cfg, s.name))


def recorded_import_is_current(cfg, s: table.Stage, entry: dict) -> bool:
    """An eval.json entry of stage `s` is that of the import `cfg` asks for (or `s` is trained):
    a changed `hf_checkpoint` is imported again, and refused if its model differs."""
    if not is_imported(cfg, s):
        return "imported from" not in entry
    return entry.get("imported from") == os.path.abspath(checkpoint_of(cfg, s.name))


def check_checkpoint_starts(cfg, stages=table.STAGES) -> None:
    """Only pretraining stages start from a checkpoint (the others start from a stage), and a
    student's vocabulary is its teacher's tokenizer's."""
    pretraining = [s.name for s in stages if s.kind == table.PRETRAIN]
    for s in stages:
        directory = checkpoint_of(cfg, s.name)
        if not directory:
            continue
        if s.kind != table.PRETRAIN:
            raise ValueError(f"--config.{s.name}.hf_checkpoint={directory}: only the pretraining "
                             f"stages ({', '.join(pretraining)}) start from a checkpoint; "
                             f"{s.name} starts from {s.starts_from or s.teacher}")
        if s.tokenizer is None:
            continue
        source = next(t.name for t in stages if t.tokenizer is None)
        shared = getattr(cfg, source).data.tokenizer_path
        if not shared:
            raise ValueError(
                f"--config.{s.name}.hf_checkpoint={directory} brings its own tokenizer, but "
                f"{source} trains the embedded one, so the two vocabularies differ: start {source} "
                f"from a checkpoint with this tokenizer (--config.{source}.hf_checkpoint=...) or "
                f"pretrain it with it (--config.{source}.data.tokenizer_path={directory})")
        difference = rdata.vocabulary_difference(rdata.load_tokenizer(shared),
                                                 rdata.load_tokenizer(directory))
        if difference:
            raise ValueError(f"--config.{s.name}.hf_checkpoint={directory}: its vocabulary is not "
                             f"that of {source}'s tokenizer {shared} ({difference}); a student is "
                             "distilled token by token, so it needs its teacher's vocabulary")


def import_stage(stage_cfg, model_cfg, tok, stage_dir: str, output: str) -> dict:
    """Write the checkpoint `stage_cfg.hf_checkpoint` as the stage's step-0 checkpoint in
    `output`, sharded over the stage's mesh; `tok` is the tokenizer the pipeline's stages share.
    Returns what eval.json records about it."""
    directory = stage_cfg.hf_checkpoint
    reached = latest_step(output)
    if reached not in (None, 0):
        raise ValueError(f"{output} holds a trained stage (step {reached}), not an import of "
                         f"{directory}: use a new workdir to start this stage from a checkpoint")
    if model_cfg.vocab_size < tok.vocab_size:
        raise ValueError(f"{directory}: the model's vocab_size={model_cfg.vocab_size} < the "
                         f"tokenizer's {tok.vocab_size} ({tok.path})")
    record = {**to_dict(stage_cfg), "model": to_dict(model_cfg)}
    if reached is None:
        shardings = param_shardings(model_cfg, make_mesh(stage_cfg.mesh))
        abstract = abstract_with_shardings(models.abstract_params(model_cfg), shardings)
        write_params_checkpoint(output, hf_params(directory, model_cfg, abstract), step=0)
    else:  # imported before (and perhaps not recorded): the same checkpoint, or refused
        check_resume(stage_dir, record, pinned=("model", "hf_checkpoint"))

    def write_record():  # what a later export compares its model with (check_resume)
        os.makedirs(stage_dir, exist_ok=True)
        with open(os.path.join(stage_dir, "config.json"), "w") as f:
            json.dump(record, f, indent=2, default=str)

    on_main(f"record the import of {directory}", write_record)
    return {"imported from": os.path.abspath(directory)}
