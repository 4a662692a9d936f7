"""The R1 recipe in miniature, stage by stage (the stage list is in r1jax/recipe/config.py).

Every stage writes to `workdir/<stage>/` and starts from the checkpoint of the stage it builds on;
each is resumable (the training loops restore their own checkpoints) and, once finished, is
evaluated on one held-out set and recorded in `workdir/eval.json` and `workdir/<stage>/eval.md`.
A finished stage is skipped on the next run; a stage whose config asks for more steps than it
ran resumes and is evaluated again. Stages downstream of a changed stage are not invalidated:
to rerun them, use a new workdir (or delete their directories and eval.json entries).

The teacher and the student share the tokenizer trained in `base/`, so logit distillation
compares distributions over one vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

from r1jax import data as rdata
from r1jax.data import tasks
from r1jax.data.chat import completion_of
from r1jax.distill.distill_step import distill_step_fn, teacher_topk_batch
from r1jax.distill.rejection import rejection_sample, write_sft_jsonl
from r1jax.distill.teacher_kl import heldout_teacher_kl
from r1jax.eval.evaluate import evaluate
from r1jax.eval.tables import format_table
from r1jax.recipe.compute import match_sft_steps, rl_student_flops, sft_student_flops
from r1jax.recipe.config import STAGES, DataSetConfig, PipelineConfig
from r1jax.rl import rewards
from r1jax.rl.grpo_loop import POLICY_PATH, RLConfig, run_grpo
from r1jax.rl.sampling import SamplingConfig
from r1jax.train import loop
from r1jax.train.checkpoint import latest_step, load_params
from r1jax.train.experiment import ExperimentConfig, to_dict

TEACHER_STAGES = ("base", "r1_zero", "cold_start", "reasoning_rl", "rejection_sft", "final_rl")
RL_STAGES = ("r1_zero", "reasoning_rl", "final_rl", "student_rl")
# What each trained stage starts from (None: from scratch).
STARTS_FROM = {"base": None, "r1_zero": "base", "cold_start": "base", "reasoning_rl": "cold_start",
               "rejection_sft": "base", "final_rl": "rejection_sft", "student_base": None,
               "student_rl": "student_base", "student_sft": "student_base",
               "student_logit": "student_base"}
# Which stage's policy samples each generated data set, and the JSONL it is written to.
DATA_SOURCES = {"rejection_data": ("reasoning_rl", "rejection.jsonl"),
                "distill_data": ("final_rl", "distill.jsonl")}


class Pipeline:
    def __init__(self, cfg: PipelineConfig, workdir: str):
        self.cfg, self.workdir = cfg, os.path.abspath(workdir)
        os.makedirs(os.path.join(self.workdir, "data"), exist_ok=True)
        with open(os.path.join(self.workdir, "config.json"), "w") as f:
            json.dump(to_dict(cfg), f, indent=2, default=str)
        self.results_path = os.path.join(self.workdir, "eval.json")
        self.results = (json.load(open(self.results_path)) if os.path.exists(self.results_path)
                        else {})
        self.problems = rdata.heldout_problems(cfg.task, num_problems=cfg.eval.num_problems,
                                               **dict(cfg.task_kwargs))
        self._tok = None

    # ------------------------------------------------------------------ paths and params
    def stage_dir(self, stage: str) -> str:
        return os.path.join(self.workdir, stage)

    def checkpoints(self, stage: str) -> str:
        return os.path.join(self.stage_dir(stage), "checkpoints")

    def model_of(self, stage: str):
        return (self.cfg.base if stage in TEACHER_STAGES else self.cfg.student_base).model

    def params(self, stage: str):
        path = POLICY_PATH if stage in RL_STAGES else ("params",)
        return load_params(self.model_of(stage), self.checkpoints(stage), mesh=self.cfg.base.mesh,
                           path=path)

    @property
    def tokenizer_path(self) -> str:
        d = self.cfg.base.data
        return os.path.join(self.stage_dir("base"), f"tokenizer_v{d.vocab_size}_s{d.seed}.model")

    @property
    def tok(self):
        if self._tok is None:
            self._tok = rdata.Tokenizer(self.tokenizer_path)
        return self._tok

    # ------------------------------------------------------------------ bookkeeping
    def steps_of(self, stage: str) -> int:
        if stage in DATA_SOURCES:
            return 0
        run = getattr(self.cfg, stage)
        return run.steps if isinstance(run, RLConfig) else self.train_config(stage).train.steps

    def done(self, stage: str) -> bool:
        entry = self.results.get(stage)
        return entry is not None and entry.get("steps") == self.steps_of(stage)

    def record(self, stage: str, entry: dict) -> None:
        entry = {**entry, "steps": self.steps_of(stage)}
        self.results[stage] = entry
        with open(self.results_path, "w") as f:
            json.dump(self.results, f, indent=2)
        os.makedirs(self.stage_dir(stage), exist_ok=True)
        shown = {k: v for k, v in entry.items() if isinstance(v, (int, float, str))}
        with open(os.path.join(self.stage_dir(stage), "eval.md"), "w") as f:
            f.write(f"{stage}: held-out {self.cfg.task}\n\n{format_table([shown], list(shown))}")

    def evaluate(self, stage: str, params) -> dict:
        return evaluate(self.model_of(stage), params, self.tok, self.problems, self.cfg.eval,
                        max_prompt_len=self.cfg.r1_zero.max_prompt_len)

    # ------------------------------------------------------------------ stage kinds
    def train_config(self, stage: str) -> ExperimentConfig:
        """The stage's ExperimentConfig with its data, tokenizer and starting point filled in."""
        cfg: ExperimentConfig = getattr(self.cfg, stage)
        source = STARTS_FROM[stage]
        data = cfg.data
        if stage != "base":  # every later stage reads the teacher's tokenizer
            data = dataclasses.replace(data, tokenizer_path=self.tokenizer_path)
        sets = {"cold_start": "cold_start.jsonl", "rejection_sft": "rejection.jsonl",
                "student_sft": "distill.jsonl", "student_logit": "distill.jsonl"}
        if stage in sets:
            data = dataclasses.replace(data, task=os.path.join(self.workdir, "data", sets[stage]),
                                       mode="sft")
        train = cfg.train
        if source is not None:
            train = dataclasses.replace(train, init_from=self.checkpoints(source))
        if stage in ("student_sft", "student_logit") and self.cfg.match_student_compute:
            student = self.cfg.student_base.model
            steps = match_sft_steps(student, self.cfg.student_rl, data.batch_size, data.seq_len)
            train = dataclasses.replace(train, steps=steps, ckpt_every=steps)
        return dataclasses.replace(cfg, name=stage, data=data, train=train)

    def run_train(self, stage: str) -> dict:
        cfg = self.train_config(stage)
        if stage == "student_logit":
            teacher_cfg, teacher = self.model_of("final_rl"), self.params("final_rl")
            lc = self.cfg.logit
            k = lc.topk or teacher_cfg.vocab_size

            def step_for(cfg, tx, lr):
                return distill_step_fn(cfg.model, tx, kind=lc.kind, temperature=lc.temperature,
                                       beta=lc.beta, hard_label_weight=lc.hard_label_weight,
                                       topk=k, grad_accum=cfg.train.grad_accum, lr_schedule=lr)

            def prepare_batch(batch):
                return {**batch, **teacher_topk_batch(teacher_cfg, teacher, batch, k, lc.temperature)}

            loop.run(cfg, self.stage_dir(stage), step_for=step_for, prepare_batch=prepare_batch)
        else:
            loop.run(cfg, self.stage_dir(stage))
        entry = {}
        if stage in ("student_sft", "student_logit"):  # the compute spent after the base
            entry["student TFLOP"] = sft_student_flops(cfg.model, cfg.data, cfg.train.steps) / 1e12
        return entry

    def run_rl(self, stage: str) -> dict:
        rl: RLConfig = getattr(self.cfg, stage)
        rl = dataclasses.replace(rl, task=self.cfg.task, task_kwargs=self.cfg.task_kwargs)
        run_grpo(self.model_of(stage), rl, self.tok, self.checkpoints(STARTS_FROM[stage]),
                 self.checkpoints(stage), mesh=self.cfg.base.mesh, log_dir=self.stage_dir(stage),
                 init_path=POLICY_PATH if STARTS_FROM[stage] in RL_STAGES else ("params",))
        if stage == "student_rl":
            return {"student TFLOP": rl_student_flops(self.model_of(stage), rl) / 1e12}
        return {}

    def make_cold_start_set(self) -> None:
        """A small set of clean worked solutions (R1's cold start: a few thousand readable
        long-CoT examples), from a stream apart from the RL prompts'."""
        d = self.cfg.cold_start_data
        problems = rdata.distinct_problems(self.cfg.task, num_problems=d.num_prompts, seed=d.seed,
                                           split=tasks.TRAIN, **dict(self.cfg.task_kwargs))
        records = [{"prompt": p["prompt"], "completion": completion_of(p),
                    "answer": p["answer"], "source": f"{self.cfg.task} generator, seed {d.seed}"}
                   for p in problems]
        write_sft_jsonl(records, os.path.join(self.workdir, "data", "cold_start.jsonl"))

    def make_rejection_set(self, name: str) -> dict:
        """Rejection-sample the source stage's policy on training prompts; write the kept set."""
        source, filename = DATA_SOURCES[name]
        d: DataSetConfig = getattr(self.cfg, name)
        problems = rdata.distinct_problems(self.cfg.task, num_problems=d.num_prompts, seed=d.seed,
                                           split=tasks.TRAIN, **dict(self.cfg.task_kwargs))
        sampling = SamplingConfig(max_new_tokens=d.max_new_tokens, temperature=d.temperature,
                                  top_p=d.top_p)
        records, stats = rejection_sample(
            self.model_of(source), self.params(source), self.tok, problems, k=d.k,
            reward_fn=rewards.accuracy_reward, threshold=d.min_reward, sampling=sampling,
            seed=d.seed, teacher_name=self.checkpoints(source),
            max_prompt_len=self.cfg.r1_zero.max_prompt_len, require_format=d.require_format)
        if not records:
            raise RuntimeError(f"{name}: rejection sampling kept 0 of {stats['sampled']} samples "
                               f"of {source}; train {source} longer or lower {name}.min_reward")
        write_sft_jsonl(records, os.path.join(self.workdir, "data", filename))
        return {"sampled": stats["sampled"], "kept": stats["kept"],
                "acceptance": 100 * stats["acceptance"]}

    # ------------------------------------------------------------------ driver
    def run_stage(self, stage: str) -> None:
        if self.done(stage):
            return
        print(f"\n=== {stage}")
        t0 = time.perf_counter()
        if stage in DATA_SOURCES:
            self.record(stage, {**self.make_rejection_set(stage),
                                "seconds": time.perf_counter() - t0})
            return
        if stage == "cold_start":
            self.make_cold_start_set()
        entry = self.run_rl(stage) if stage in RL_STAGES else self.run_train(stage)
        reached = latest_step(self.checkpoints(stage))
        if reached != self.steps_of(stage):  # SIGTERM / Ctrl-C: saved, not finished
            raise SystemExit(f"{stage} stopped at step {reached} of {self.steps_of(stage)} "
                             "(checkpoint saved); rerun the same command to resume")
        params = self.params(stage)
        entry.update(self.evaluate(stage, params))
        if stage.startswith("student"):
            entry["KL to teacher"] = heldout_teacher_kl(
                self.model_of(stage), params, self.model_of("final_rl"), self.params("final_rl"),
                self.tok, self.problems, seq_len=self.cfg.student_base.data.seq_len)
        entry["seconds"] = time.perf_counter() - t0  # this run of the stage, eval included
        self.record(stage, entry)


def needed_stages(wanted: tuple[str, ...]) -> list[str]:
    """`wanted` and everything they build on, in pipeline order."""
    depends = {**STARTS_FROM, "rejection_data": "reasoning_rl", "distill_data": "final_rl"}
    # The student reads the teacher's tokenizer and is measured against the final teacher.
    extra = {"rejection_sft": ("rejection_data",), "student_sft": ("distill_data",),
             "student_logit": ("distill_data",), "student_base": ("base", "final_rl")}
    need, todo = set(), list(wanted)
    while todo:
        stage = todo.pop()
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        if stage not in need:
            need.add(stage)
            todo += [s for s in (depends.get(stage), *extra.get(stage, ())) if s]
    return [s for s in STAGES if s in need]


def run(cfg: PipelineConfig, workdir: str, stages: tuple[str, ...] = STAGES) -> dict:
    """Run (or resume) `stages` and what they need; returns eval.json's contents."""
    pipeline = Pipeline(cfg, workdir)
    for stage in needed_stages(stages):
        pipeline.run_stage(stage)
    return pipeline.results
