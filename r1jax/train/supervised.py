"""Supervised runs on the loop: pretraining, SFT and logit distillation, whose batches come from
a grain data pipeline (`DataBatches`). `run(cfg, workdir)` is `experiments/train.py`."""

from __future__ import annotations

import jax
import numpy as np

from r1jax import data as rdata
from r1jax.distributed import on_main
from r1jax.sharding import batch_sharding, make_mesh
from r1jax.train import loop
from r1jax.train.experiment import DataConfig, ExperimentConfig, to_dict
from r1jax.train.steps import sft_step_fn


def build_dataset(cfg: ExperimentConfig, tok, *, split: str = rdata.TRAIN,
                  skipped: rdata.SkippedRows | None = None):
    """The batches of cfg.data; SFT rows with nothing to train on are counted in `skipped`."""
    d = cfg.data
    knobs = dict(d.task_kwargs)
    if d.task == "corpus":
        examples = rdata.corpus_dataset(seed=d.seed, task_names=tuple(d.corpus_tasks),
                                        noise_rate=d.noise_rate,
                                        task_kwargs={t: knobs for t in d.corpus_tasks})
    elif d.task in rdata.tasks.TASKS or rdata.is_data_path(d.task):
        examples = rdata.examples_of(d.task, seed=d.seed, split=split, fields=d.fields, **knobs)
    else:
        raise ValueError(f"data.task={d.task!r}: use corpus, {', '.join(rdata.tasks.TASKS)}, a "
                         ".jsonl/.parquet path or a directory written by datasets' save_to_disk")
    disjoint = d.process_split == "disjoint"
    shards = dict(num_shards=jax.process_count() if disjoint else 1,
                  shard_index=jax.process_index() if disjoint else 0)
    if d.mode == "sft":
        return rdata.sft_batches(examples, tok, seq_len=d.seq_len, batch_size=d.batch_size,
                                 seed=d.seed, skipped=skipped, **shards)
    return rdata.pretraining_batches(examples, tok, seq_len=d.seq_len, batch_size=d.batch_size,
                                     seed=d.seed, **shards)


def process_rows(cfg: ExperimentConfig, batch: dict) -> dict:
    """This process's rows of a global batch (process_split="slice")."""
    if cfg.data.process_split != "slice" or jax.process_count() == 1:
        return batch
    rows = cfg.data.batch_size // jax.process_count()
    lo = jax.process_index() * rows
    return {k: np.asarray(v)[lo:lo + rows] for k, v in batch.items()}


def check_batch_divisible(cfg: ExperimentConfig, mesh) -> None:
    mesh_shape = dict(mesh.shape)
    shards = mesh_shape["data"] * mesh_shape["fsdp"] * mesh_shape["expert"]
    if cfg.data.batch_size % shards:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} is not divisible by the batch axes "
                         f"data*fsdp*expert = {shards} of mesh {mesh_shape}")
    if cfg.data.batch_size % (cfg.train.grad_accum * shards):
        raise ValueError(f"data.batch_size={cfg.data.batch_size} must be divisible by "
                         f"train.grad_accum * batch shards = {cfg.train.grad_accum * shards}")


class DataBatches(loop.BatchSource):
    """Batches of a grain pipeline, this process's rows placed on the mesh; `transform(batch)`
    adds what the step needs (e.g. a teacher's top-k log-probs for `distill_step`)."""

    def __init__(self, cfg: ExperimentConfig, dataset, transform=None,
                 skipped: rdata.SkippedRows | None = None):
        self.cfg, self.transform, self.skipped = cfg, transform, skipped
        self.iterator = iter(dataset)

    def start(self, mesh, state) -> None:
        self.sharding = batch_sharding(mesh)

    def next(self, state) -> tuple[dict, dict]:
        local = process_rows(self.cfg, next(self.iterator))
        batch = {k: jax.make_array_from_process_local_data(self.sharding, np.asarray(v))
                 for k, v in local.items()}
        # SFT rows with no completion token inside seq_len, left out (r1jax/data/pipeline.py).
        extra = {} if self.skipped is None else {"skipped_rows": float(self.skipped.count)}
        return (batch if self.transform is None else self.transform(batch)), extra

    def get_state(self) -> dict:
        return self.iterator.get_state()

    def set_state(self, data_state: dict) -> None:
        self.iterator.set_state(data_state)


def shared_tokenizer(workdir: str, data: DataConfig):
    """`data.tokenizer_path` (a checkpoint directory or a .model file), or the tokenizer cached in
    workdir, trained there by process 0."""
    if data.tokenizer_path:
        return rdata.load_tokenizer(data.tokenizer_path)
    on_main("tokenizer", lambda: rdata.load_or_train_tokenizer(workdir, vocab_size=data.vocab_size,
                                                              seed=data.seed))
    return rdata.load_or_train_tokenizer(workdir, vocab_size=data.vocab_size, seed=data.seed)


def sft_step_for(cfg: ExperimentConfig):
    """The default step: next-token NLL (+ MTP) under cfg.train's options."""
    def make_step(tx, lr):
        return sft_step_fn(cfg.model, tx, mtp_weight=cfg.train.mtp_weight,
                           grad_accum=cfg.train.grad_accum,
                           bias_update_speed=cfg.train.bias_update_speed, lr_schedule=lr)
    return make_step


def run(cfg: ExperimentConfig, workdir: str, *, make_step=None, transform=None) -> list[dict]:
    """Train per `cfg` on its data pipeline, checkpointing in workdir; returns the metrics logged
    by this run. make_step(tx, lr_schedule) builds the pure step (default: SFT / pretraining)."""
    check_batch_divisible(cfg, make_mesh(cfg.mesh))  # before anything is compiled
    tok = shared_tokenizer(workdir, cfg.data)
    if cfg.model.vocab_size < tok.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} < tokenizer vocab {tok.vocab_size}")
    skipped = rdata.SkippedRows()
    source = DataBatches(cfg, build_dataset(cfg, tok, skipped=skipped), transform, skipped)
    return loop.run(workdir, name=cfg.name, model_cfg=cfg.model, mesh_cfg=cfg.mesh, optim=cfg.optim,
                    train=cfg.train, make_step=make_step or sft_step_for(cfg), source=source,
                    record=to_dict(cfg), pinned=("model", "data"))
