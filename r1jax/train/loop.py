"""The training loop: one readable function, in phases (Mesh, Data, Model, Shard, Checkpoint,
Step, Loop). Pretraining and SFT run here; GRPO and distillation reuse the pieces."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import jax
import numpy as np
from tqdm import tqdm

from r1jax import data as rdata
from r1jax.models.counting import train_flops_per_token
from r1jax.sharding import batch_sharding, make_mesh, replicated
from r1jax.train.checkpoint import Checkpointer, abstract_with_shardings, restore_params
from r1jax.train.experiment import ExperimentConfig, to_dict
from r1jax.train.metrics_log import MetricsLog
from r1jax.train.optim import learning_rate, make_optimizer
from r1jax.train.state import init_state, state_shardings
from r1jax.train.steps import sft_step_fn


class StopRequested:
    """SIGTERM / Ctrl-C set a flag; the loop saves a checkpoint at the next step and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_dataset(cfg: ExperimentConfig, tok, *, split: str = rdata.TRAIN):
    d = cfg.data
    knobs = dict(d.task_kwargs)
    if d.task == "corpus":
        examples = rdata.corpus_dataset(seed=d.seed, task_names=tuple(d.corpus_tasks),
                                        noise_rate=d.noise_rate,
                                        task_kwargs={t: knobs for t in d.corpus_tasks})
    elif d.task in ("arithmetic", "countdown"):
        examples = rdata.task_dataset(d.task, seed=d.seed, split=split, **knobs)
    elif d.task.endswith((".jsonl", ".parquet")):
        examples = rdata.file_dataset([d.task])
    else:
        raise ValueError(f"data.task={d.task!r}: use corpus, arithmetic, countdown or a .jsonl/.parquet path")
    make = {"pretrain": rdata.pretraining_batches, "sft": rdata.sft_batches}
    if d.mode not in make:
        raise ValueError(f"data.mode={d.mode!r}: choose one of {sorted(make)}")
    if d.process_split not in ("slice", "disjoint"):
        raise ValueError(f"data.process_split={d.process_split!r}: choose 'slice' or 'disjoint'")
    disjoint = d.process_split == "disjoint"
    return make[d.mode](examples, tok, seq_len=d.seq_len, batch_size=d.batch_size, seed=d.seed,
                        num_shards=jax.process_count() if disjoint else 1,
                        shard_index=jax.process_index() if disjoint else 0)


def process_rows(cfg: ExperimentConfig, batch: dict) -> dict:
    """This process's rows of a global batch (process_split="slice")."""
    if cfg.data.process_split != "slice" or jax.process_count() == 1:
        return batch
    rows = cfg.data.batch_size // jax.process_count()
    lo = jax.process_index() * rows
    return {k: np.asarray(v)[lo:lo + rows] for k, v in batch.items()}


def check_batch_divisible(cfg: ExperimentConfig, mesh) -> None:
    shards = mesh.shape["data"] * mesh.shape["fsdp"] * mesh.shape["expert"]
    if cfg.data.batch_size % shards:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} is not divisible by the batch axes "
                         f"data*fsdp*expert = {shards} of mesh {dict(mesh.shape)}")
    if cfg.data.batch_size % (cfg.train.grad_accum * shards):
        raise ValueError(f"data.batch_size={cfg.data.batch_size} must be divisible by "
                         f"train.grad_accum * batch shards = {cfg.train.grad_accum * shards}")


def sft_step_for(cfg: ExperimentConfig, tx, lr):
    """The default step of the loop: next-token NLL (+ MTP) under cfg.train's options."""
    return sft_step_fn(cfg.model, tx, mtp_weight=cfg.train.mtp_weight, grad_accum=cfg.train.grad_accum,
                       bias_update_speed=cfg.train.bias_update_speed, lr_schedule=lr)


def run(cfg: ExperimentConfig, workdir: str, *, step_for=sft_step_for, prepare_batch=None) -> list[dict]:
    """Train per `cfg`, checkpointing in workdir; returns the logged metrics of this run.

    step_for(cfg, tx, lr_schedule) builds the pure step (default: SFT / pretraining);
    prepare_batch(batch) -> batch adds what that step needs to each sharded batch (e.g. a
    teacher's top-k log-probs for `distill_step`)."""
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(to_dict(cfg), f, indent=2)

    # --- Mesh
    mesh = make_mesh(cfg.mesh)
    check_batch_divisible(cfg, mesh)

    # --- Data
    tok = rdata.load_or_train_tokenizer(workdir, model_path=cfg.data.tokenizer_path or None,
                                        vocab_size=cfg.data.vocab_size, seed=cfg.data.seed)
    if cfg.model.vocab_size < tok.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} < tokenizer vocab {tok.vocab_size}")
    data_iter = iter(build_dataset(cfg, tok))

    # --- Model and optimizer
    total = cfg.train.steps
    tx = make_optimizer(cfg.optim, total)
    lr = learning_rate(cfg.optim, total)

    # --- Shard
    shardings, abstract = state_shardings(cfg.model, tx, mesh)
    batch_sh = batch_sharding(mesh)

    # --- Checkpoint
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=cfg.train.ckpt_every,
                        keep=cfg.train.keep, async_save=cfg.train.async_checkpoint)
    restored = ckpt.restore(abstract_with_shardings(abstract, shardings))
    if restored is not None:
        state, data_state = restored
        data_iter.set_state(data_state)
    else:
        init = jax.jit(lambda k: init_state(cfg.model, tx, k), out_shardings=shardings)
        state = init(jax.random.key(cfg.train.seed))
        if cfg.train.init_from:
            params = restore_params(cfg.train.init_from,
                                    abstract_with_shardings(abstract.params, shardings.params))
            state = state.replace(params=params)
    start = int(state.step)

    # --- Step
    step_fn = jax.jit(step_for(cfg, tx, lr), in_shardings=(shardings, batch_sh),
                      out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    flops = train_flops_per_token(cfg.model, cfg.data.seq_len)
    log = MetricsLog(workdir, enabled=is_main)

    # --- Loop
    history = []
    bar = tqdm(range(start, total), initial=start, total=total, disable=not is_main,
               desc=cfg.name, dynamic_ncols=True)
    t0 = time.perf_counter()
    with StopRequested() as stop, jax.set_mesh(mesh):
        for step in bar:
            local = process_rows(cfg, next(data_iter))
            batch = {k: jax.make_array_from_process_local_data(batch_sh, np.asarray(v))
                     for k, v in local.items()}
            if prepare_batch is not None:
                batch = prepare_batch(batch)
            with jax.transfer_guard("disallow"):
                state, metrics = step_fn(state, batch)
            done = step + 1
            if done % cfg.train.log_every == 0 or done == total:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                elapsed = time.perf_counter() - t0
                tokens = cfg.data.batch_size * cfg.data.seq_len * cfg.train.log_every
                m["tokens_per_s"] = tokens / elapsed
                if cfg.train.peak_tflops:
                    m["mfu"] = flops * m["tokens_per_s"] / (cfg.train.peak_tflops * 1e12 * jax.device_count())
                m["step"] = done
                history.append(m)
                log.write(m)
                bar.set_postfix(loss=f"{m['loss']:.4f}")
                t0 = time.perf_counter()
            ckpt.save(done, state, data_iter.get_state(), force=stop.requested or done == total)
            if stop.requested:
                print(f"stopping at step {done}: checkpoint saved in {ckpt.directory}")
                break
    ckpt.close()
    log.close()
    return history
