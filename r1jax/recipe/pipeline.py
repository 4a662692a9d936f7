"""The R1 recipe in miniature, run from the stage table (r1jax/recipe/stages.py).

Every stage writes `workdir/<stage>/` (training) or `workdir/data/<stage>.jsonl` (data), starts
from what its record names, resumes from its own checkpoints, and once finished is recorded in
`workdir/eval.json` (and `<stage>/eval.md`): its held-out evaluation for a training stage, its
sampling statistics for a data stage. A recorded stage is skipped on the next run; a training
stage whose config asks for more steps than it recorded resumes and is evaluated again. Stages
downstream of a changed stage are not invalidated: to rerun them, use a new workdir (or delete
their directories and eval.json entries).

With several processes every process runs every stage (sampling and training are global
computations) and only process 0 writes the shared files; the others wait for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time

from r1jax import data as rdata
from r1jax.data import tasks
from r1jax.data.chat import completion_of
from r1jax.distill.distill_step import distill_step_fn, teacher_topk_batch
from r1jax.distill.rejection import rejection_sample, write_sft_jsonl
from r1jax.distill.teacher_kl import heldout_teacher_kl
from r1jax.distributed import is_main, on_main
from r1jax.eval.evaluate import evaluate, heldout_set
from r1jax.eval.tables import format_table
from r1jax.recipe import stages as table
from r1jax.recipe.compute import match_sft_steps, rl_flops, sft_flops
from r1jax.recipe.config import KIND_CONFIGS, PipelineConfig
from r1jax.recipe.curves import summarize_curve
from r1jax.recipe.export import stage_model, tokenizer_file
from r1jax.recipe.hf_stages import (check_checkpoint_starts, import_stage, is_imported,
                                   recorded_import_is_current)
from r1jax.rl import grpo_stage
from r1jax.sharding import make_mesh
from r1jax.train import supervised
from r1jax.train.checkpoint import latest_step, load_params
from r1jax.train.experiment import to_dict
from r1jax.train.metrics_log import read_metrics
from r1jax.train.hf_start import start_from_hf
from r1jax.train.workdir import WorkdirLock


class Pipeline:
    def __init__(self, cfg: PipelineConfig, workdir: str, stages=table.STAGES):
        cfg = start_from_hf(cfg)  # the entry resolved it already; this gives an equal config
        check_checkpoint_starts(cfg, stages)
        self.cfg, self.workdir, self.stages = cfg, os.path.abspath(workdir), stages
        for s in stages:
            expected = KIND_CONFIGS[s.kind]
            if not isinstance(getattr(cfg, s.name, None), expected):
                raise TypeError(f"PipelineConfig.{s.name} must be a {expected.__name__} for a "
                                f"{s.kind} stage, got {type(getattr(cfg, s.name, None)).__name__}")
        self.results_path = os.path.join(self.workdir, "eval.json")

        def write_config():
            os.makedirs(os.path.join(self.workdir, "data"), exist_ok=True)
            with open(os.path.join(self.workdir, "config.json"), "w") as f:
                json.dump(to_dict(cfg), f, indent=2, default=str)

        on_main("pipeline config", write_config)
        self.results = (json.load(open(self.results_path)) if os.path.exists(self.results_path)
                        else {})
        self._tok = None

    # ------------------------------------------------------------------ paths, models, params
    def stage_dir(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def output(self, name: str) -> str:
        return os.path.join(self.workdir, table.stage(name, self.stages).writes)

    def model_of(self, name: str):
        return stage_model(self.cfg, name, self.stages)

    def params(self, name: str, mesh_cfg=None):
        """The final params of training stage `name`, on `mesh_cfg` (default: that stage's mesh)."""
        return load_params(self.model_of(name), self.output(name),
                           mesh=mesh_cfg or getattr(self.cfg, name).mesh)

    @property
    def tok(self):
        """The tokenizer every stage shares, trained by the stage whose record has none."""
        if self._tok is None:
            self._tok = rdata.load_tokenizer(tokenizer_file(self.cfg, self.workdir, self.stages))
        return self._tok

    # ------------------------------------------------------------------ bookkeeping
    def steps_of(self, name: str) -> int:
        """A training stage's steps (derived from `compute_of` where the config asks); 0 for data."""
        s = table.stage(name, self.stages)
        if s.is_data or is_imported(self.cfg, s):
            return 0
        cfg = getattr(self.cfg, name)
        if s.compute_of is None or not self.cfg.match_student_compute:
            return cfg.train.steps
        return match_sft_steps(self.model_of(name), getattr(self.cfg, s.compute_of),
                               cfg.data.batch_size, cfg.data.seq_len)

    def done(self, name: str) -> bool:
        entry = self.results.get(name)
        return (entry is not None and entry.get("steps") == self.steps_of(name)
                and recorded_import_is_current(self.cfg, table.stage(name, self.stages), entry))

    def record(self, name: str, entry: dict) -> None:
        entry = {**entry, "steps": self.steps_of(name)}
        self.results[name] = entry

        def write():
            partial = self.results_path + ".partial"  # eval.json is replaced whole or not at all
            with open(partial, "w") as f:
                json.dump(self.results, f, indent=2)
            os.replace(partial, self.results_path)
            os.makedirs(self.stage_dir(name), exist_ok=True)
            shown = {k: v for k, v in entry.items() if isinstance(v, (int, float, str))}
            cfg = getattr(self.cfg, name)
            what = f"held-out {cfg.eval.task}" if hasattr(cfg, "eval") else "data set"
            with open(os.path.join(self.stage_dir(name), "eval.md"), "w") as f:
                f.write(f"{name}: {what}\n\n{format_table([shown], list(shown))}")

        on_main(f"record {name}", write)

    # ------------------------------------------------------------------ training stages
    def stage_config(self, s: table.Stage):
        """The stage's own config with what the table wires filled in: the checkpoint it starts
        from, the tokenizer it reads, the data set it trains on, steps matched to `compute_of`."""
        cfg = getattr(self.cfg, s.name)
        train = cfg.train
        if s.starts_from is not None:
            train = dataclasses.replace(train, init_from=self.output(s.starts_from))
        if s.kind == table.GRPO:
            return dataclasses.replace(cfg, train=train)
        data = cfg.data
        if s.tokenizer is not None:
            data = dataclasses.replace(data, tokenizer_path=self.tok.path)
        if s.data is not None:
            data = dataclasses.replace(data, task=self.output(s.data), mode="sft")
        if self.steps_of(s.name) != train.steps:
            steps = self.steps_of(s.name)
            train = dataclasses.replace(train, steps=steps, ckpt_every=steps)
        return dataclasses.replace(cfg, name=s.name, model=self.model_of(s.name), data=data,
                                   train=train)

    def train(self, s: table.Stage) -> dict:
        """Run (or resume) a training stage; returns its compute as a table entry."""
        if is_imported(self.cfg, s):
            return import_stage(getattr(self.cfg, s.name), self.model_of(s.name), self.tok,
                                self.stage_dir(s.name), self.output(s.name))
        cfg, model = self.stage_config(s), self.model_of(s.name)
        if s.kind == table.GRPO:
            grpo_stage.run(model, cfg, self.tok, self.stage_dir(s.name), name=s.name)
            return {"TFLOP": rl_flops(model, cfg) / 1e12,
                    "rollouts": summarize_curve(read_metrics(self.stage_dir(s.name)))}
        if s.kind == table.LOGIT_DISTILL:
            teacher_cfg, teacher = self.model_of(s.teacher), self.params(s.teacher, cfg.mesh)
            lc = cfg.logit
            k = lc.topk or teacher_cfg.vocab_size

            def make_step(tx, lr):
                return distill_step_fn(model, tx, kind=lc.kind, temperature=lc.temperature,
                                       beta=lc.beta, hard_label_weight=lc.hard_label_weight, topk=k,
                                       grad_accum=cfg.train.grad_accum,
                                       bias_update_speed=cfg.train.bias_update_speed, lr_schedule=lr)

            def with_teacher(batch):
                return {**batch, **teacher_topk_batch(teacher_cfg, teacher, batch, k, lc.temperature)}

            supervised.run(cfg, self.stage_dir(s.name), make_step=make_step, transform=with_teacher)
        else:
            supervised.run(cfg, self.stage_dir(s.name))
        return {} if s.kind == table.PRETRAIN else {"TFLOP": sft_flops(model, cfg.data, cfg.train.steps) / 1e12}

    def evaluate(self, s: table.Stage) -> dict:
        cfg = getattr(self.cfg, s.name)
        params, problems = self.params(s.name), heldout_set(cfg.eval)
        entry = evaluate(self.model_of(s.name), params, self.tok, problems, cfg.eval,
                         mesh=make_mesh(cfg.mesh))
        if s.teacher is not None:
            entry["KL to teacher"] = heldout_teacher_kl(
                self.model_of(s.name), params, self.model_of(s.teacher),
                self.params(s.teacher, cfg.mesh), self.tok, problems, seq_len=cfg.eval.kl_seq_len)
        return entry

    # ------------------------------------------------------------------ data stages
    def make_worked_solutions(self, s: table.Stage) -> dict:
        """Clean worked solutions of training problems (R1's cold start: a few thousand readable
        long-CoT examples), from a stream apart from the RL prompts'."""
        d = getattr(self.cfg, s.name)
        problems = rdata.distinct_problems(d.task, num_problems=d.num_prompts, seed=d.seed,
                                           split=tasks.TRAIN, **dict(d.task_kwargs))
        records = [{**{k: v for k, v in p.items() if k not in ("reasoning", "noisy")},
                    "completion": completion_of(p), "source": f"{d.task} generator, seed {d.seed}"}
                   for p in problems]
        on_main(f"write {s.name}", lambda: write_sft_jsonl(records, self.output(s.name)))
        return {"examples": len(records)}

    def make_rejection_samples(self, s: table.Stage) -> dict:
        """Rejection-sample the teacher stage's policy on training prompts; write the kept set."""
        d = getattr(self.cfg, s.name)
        problems = rdata.distinct_problems(d.task, num_problems=d.num_prompts, seed=d.seed,
                                           split=tasks.TRAIN, **dict(d.task_kwargs))
        records, stats = rejection_sample(
            self.model_of(s.teacher), self.params(s.teacher, d.mesh), self.tok, problems, k=d.k,
            sampling=d.sampling, prompts_per_batch=d.prompts_per_batch, seed=d.seed,
            teacher_name=self.output(s.teacher), require_correct=d.require_correct,
            require_format=d.require_format, min_language_consistency=d.min_language_consistency,
            max_prompt_len=d.max_prompt_len, mesh=make_mesh(d.mesh))
        if not records:
            raise RuntimeError(f"{s.name}: rejection sampling kept 0 of {stats['sampled']} samples "
                               f"of {s.teacher}; train {s.teacher} longer or relax {s.name}'s filters")
        on_main(f"write {s.name}", lambda: write_sft_jsonl(records, self.output(s.name)))
        return {"sampled": stats["sampled"], "kept": stats["kept"],
                "acceptance": 100 * stats["acceptance"]}

    # ------------------------------------------------------------------ driver
    def run_stage(self, s: table.Stage) -> None:
        if self.done(s.name):
            return
        if is_main():
            print(f"\n=== {s.name} ({s.kind})")
        t0 = time.perf_counter()
        if s.kind == table.WORKED_SOLUTIONS:
            with stop_on_signal(s.name):
                entry = self.make_worked_solutions(s)
        elif s.kind == table.REJECTION_SAMPLES:
            with stop_on_signal(s.name):
                entry = self.make_rejection_samples(s)
        else:  # the training loop saves and stops on signals itself
            entry = self.train(s)
            reached = latest_step(self.output(s.name))
            if reached != self.steps_of(s.name):  # SIGTERM / Ctrl-C: saved, not finished
                raise SystemExit(f"{s.name} stopped at step {reached} of {self.steps_of(s.name)} "
                                 "(checkpoint saved); rerun the same command to resume")
            entry.update(self.evaluate(s))
        entry["seconds"] = time.perf_counter() - t0  # this run of the stage, eval included
        self.record(s.name, entry)


@contextlib.contextmanager
def stop_on_signal(stage: str):
    """A data stage has no checkpoints: SIGTERM / Ctrl-C end it at once with a message. Its set is
    written (atomically) and recorded only at its end, so nothing half-made is kept."""
    def handle(signum, frame):
        raise SystemExit(f"{stage} stopped by {signal.Signals(signum).name} before it finished; "
                         "nothing of it was kept: rerun the same command to make it again")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(cfg: PipelineConfig, workdir: str, wanted=table.STAGE_NAMES) -> dict:
    """Run (or resume) the `wanted` stages and what they need; returns eval.json's contents.
    One pipeline at a time per workdir: process 0 holds its lock (r1jax/train/workdir.py)."""
    with WorkdirLock(os.path.abspath(workdir), enabled=is_main()):
        pipeline = Pipeline(cfg, workdir)
        for s in table.needed_stages(wanted):
            pipeline.run_stage(s)
        return pipeline.results
