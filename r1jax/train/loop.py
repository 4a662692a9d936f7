"""The training loop: one readable function that runs every stage, in phases (Mesh, Model and
optimizer, Shard, Checkpoint, Step, Loop).

It takes a step builder and a batch source. Pretraining, SFT and logit distillation draw batches
from a data pipeline (`r1jax.train.supervised`); GRPO draws them from rollouts of the policy being
trained (`r1jax.rl.grpo_stage`). Whatever the source, the loop enters the mesh (activation
shardings, expert parallelism), forbids implicit host<->device copies around the step, saves a
checkpoint on SIGTERM / Ctrl-C and every `ckpt_every` steps, writes files from process 0 only,
logs metrics, shows a progress bar, and resumes from its last checkpoint with the batch source
where it was.

Checkpoint layout (orbax): item "state" = {"train": TrainState, **source.extra_arrays()} and item
"data" = source.get_state(). A stage's params are at ("train", "params") (`PARAMS_PATH`), for
every kind of stage.
"""

from __future__ import annotations

import abc
import json
import os
import time
from typing import Callable

import jax
import numpy as np
from tqdm import tqdm

from r1jax import models
from r1jax.distributed import is_main
from r1jax.models.counting import train_flops_per_token
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh, replicated
from r1jax.train.checkpoint import Checkpointer, abstract_with_shardings, initial_params
from r1jax.train.experiment import TrainConfig
from r1jax.train.metrics_log import MetricsLog
from r1jax.train.optim import OptimConfig, learning_rate, make_optimizer
from r1jax.train.signals import StopRequested
from r1jax.train.state import init_state, state_from_params, state_shardings
from r1jax.train.workdir import WorkdirLock, check_resume


class BatchSource(abc.ABC):
    """Where the loop's batches come from. Subclasses implement `next` and override what else
    they need.

    `next` returns (batch, host_metrics): the batch as global arrays laid out for the step (rows
    over the batch axes), and host-side numbers to log with the step's metrics. The iterator
    state (`get_state` / `set_state`, JSON) and any `extra_arrays` (e.g. GRPO's reference
    policy) are saved in every checkpoint and handed back on resume, before `start`.
    """

    def start(self, mesh, state) -> None:
        """Called once under the mesh, after the state is initialised or restored."""

    @abc.abstractmethod
    def next(self, state) -> tuple[dict, dict]:
        """(batch, host_metrics) for the next step, given the current state."""

    def after_step(self, state, step: int) -> None:
        """Called after every step with the new state and the number of steps done."""

    def get_state(self) -> dict:
        return {}

    def set_state(self, data_state: dict) -> None:
        """Restore the iterator state `get_state` saved."""

    def abstract_extra(self, abstract_params) -> dict:
        """Shapes and shardings of `extra_arrays` (given the params', as ShapeDtypeStructs with
        shardings), to restore them from a checkpoint."""
        return {}

    def extra_arrays(self) -> dict:
        return {}

    def restore_extra(self, arrays: dict) -> None:
        """Take back the `extra_arrays` read from a checkpoint."""


def host_metrics(metrics) -> dict:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def run(workdir: str, *, name: str, model_cfg, mesh_cfg: MeshConfig, optim: OptimConfig,
        train: TrainConfig, make_step: Callable, source: BatchSource, record: dict,
        pinned: tuple[str, ...] = ("model",)) -> list[dict]:
    """Train `train.steps` steps of `make_step(tx, lr_schedule)` on `source`'s batches, resuming
    from workdir/checkpoints; returns the metrics logged by this run.

    `record` (the run's config as a dict) is written to workdir/config.json once the run has
    started (or resumed); a resume is refused when a field under one of the `pinned` prefixes of
    `record` differs from the saved one (r1jax/train/workdir.py). A run stopped by a signal
    returns early with its checkpoint saved: compare `checkpoint.latest_step` with `train.steps`.
    """
    with WorkdirLock(workdir, enabled=is_main()):
        return _run(workdir, name, model_cfg, mesh_cfg, optim, train, make_step, source, record,
                    pinned)


def _run(workdir, name, model_cfg, mesh_cfg, optim, train, make_step, source, record, pinned):
    main_process = is_main()

    # --- Mesh
    mesh = make_mesh(mesh_cfg)

    # --- Model and optimizer
    total = train.steps
    tx = make_optimizer(optim, total, models.param_roles(model_cfg))
    lr = learning_rate(optim, total)

    # --- Shard
    shardings, abstract = state_shardings(model_cfg, tx, mesh)
    abstract = abstract_with_shardings(abstract, shardings)

    # --- Checkpoint
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=train.ckpt_every,
                        keep=train.keep, async_save=train.async_checkpoint)
    if ckpt.latest_step() is not None:  # before anything is written or restored
        for note in check_resume(workdir, record, pinned):
            if main_process:
                print(f"{name}: resuming with a changed config: {note}", flush=True)
    restored = ckpt.restore({"train": abstract, **source.abstract_extra(abstract.params)})
    if restored is not None:
        tree, data_state = restored
        state, start = tree.pop("train"), ckpt.latest_step()
        source.restore_extra(tree)
        try:
            source.set_state(data_state)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{name}: the data iterator saved at step {start} in {ckpt.directory} "
                             f"does not fit this data pipeline ({type(e).__name__}: {e}); resume "
                             "with the data config in config.json, or use another workdir") from e
    elif train.init_from:  # a previous stage or a HF checkpoint: no random init to compile or run
        params = initial_params(train.init_from, model_cfg, abstract.params)
        start_from = jax.jit(lambda p, k: state_from_params(tx, p, k), out_shardings=shardings)
        state, start = start_from(params, jax.random.key(train.seed)), 0
    else:
        init = jax.jit(lambda k: init_state(model_cfg, tx, k), out_shardings=shardings)
        state, start = init(jax.random.key(train.seed)), 0
    if main_process:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(record, f, indent=2, default=str)

    # --- Step
    step_fn = jax.jit(make_step(tx, lr), in_shardings=(shardings, batch_sharding(mesh)),
                      out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    log = MetricsLog(workdir, enabled=main_process, resume_step=start)

    # --- Loop
    history, skipped = [], 0
    bar = tqdm(range(start, total), initial=start, total=total, disable=not main_process,
               desc=name, dynamic_ncols=True)
    t0, tokens = time.perf_counter(), 0
    try:
        with StopRequested(train.stop_grace_s, name=name) as stop, jax.set_mesh(mesh):
            source.start(mesh, state)
            for step in bar:
                batch, extra = source.next(state)
                with jax.transfer_guard("disallow"):
                    state, metrics = step_fn(state, batch)
                done = step + 1
                # One scalar per step: a non-finite step must end the run before anything else
                # is saved (the step itself left the state untouched).
                if float(jax.device_get(metrics["nonfinite"])):
                    if train.nonfinite == "stop":
                        raise SystemExit(nonfinite_message(name, done, metrics, ckpt))
                    skipped += 1
                source.after_step(state, done)
                tokens += int(np.prod(batch["inputs"].shape))
                if done % train.log_every == 0 or done == total:
                    m = {**host_metrics(metrics), **extra, "skipped_steps": float(skipped)}
                    # Wall time includes the batch source (for GRPO: sampling and scoring).
                    m["tokens_per_s"] = tokens / (time.perf_counter() - t0)
                    if train.peak_tflops:
                        flops = train_flops_per_token(model_cfg, batch["inputs"].shape[1])
                        m["mfu"] = flops * m["tokens_per_s"] / (train.peak_tflops * 1e12 * jax.device_count())
                    m["step"] = done
                    history.append(m)
                    log.write(m)
                    bar.set_postfix(loss=f"{m['loss']:.4f}")
                    t0, tokens = time.perf_counter(), 0
                stopping = stop.requested
                if stopping or done == total:
                    stop.saving()  # a second signal cannot interrupt this save
                ckpt.save(done, {"train": state, **source.extra_arrays()}, source.get_state(),
                          force=stopping or done == total)
                if stopping:
                    ckpt.wait()  # durable before it is announced
                    if main_process:
                        # flushed: a further signal may end the process before stdout would be
                        print(f"{name}: stopped at step {done}; checkpoint saved in {ckpt.directory}",
                              flush=True)
                    break
            ckpt.close()
    finally:
        ckpt.close()
        log.close()
    return history


def nonfinite_message(name: str, step: int, metrics, ckpt: Checkpointer) -> str:
    values = {k: float(v) for k, v in jax.device_get(metrics).items() if k in ("loss", "grad_norm")}
    bad = ", ".join(f"{k}={v}" for k, v in values.items() if not np.isfinite(v))
    ckpt.close()
    last = ckpt.latest_step()
    kept = f"the last checkpoint, step {last}, is finite" if last is not None else "no checkpoint was saved"
    return (f"{name}: step {step} is not finite ({bad}); it was not applied and the run stops: "
            f"{kept}. Lower optim.lr (or raise optim.warmup_steps), or set train.nonfinite='skip' "
            "to drop such steps")
