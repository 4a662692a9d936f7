"""The R1 recipe in miniature on 1-2 digit addition, every stage on 2 CPU cores.

Teacher: the tiny MoE-MLA model. Base -> R1-Zero (GRPO); cold-start SFT on 512 clean worked
solutions (Dev1) -> reasoning GRPO with accuracy + format + language consistency (Dev2) ->
rejection sampling of Dev2 (4 samples on 512 training prompts, correct + well-formed + readable
kept) and SFT of the base on the kept set (Dev3) -> GRPO at rollout temperature 0.7 (R1).
Student: a dense tiny Qwen2 (140K params vs the teacher's 176K activated) pretrained on the same
corpus, then either GRPO alone or distillation from R1 (SFT on R1's rejection samples, or
forward-KL logit distillation on the same set), at the student FLOPs of its GRPO run. With the
argument `llama` the student is a tiny Llama 3 of the same shapes instead (no q/k/v biases, Llama
3.1 RoPE frequency scaling), as DeepSeek-R1-Distill-Llama.
Held-out: 64 problems, pass@1 over k=4 samples at T=0.6 / top-p 0.95, cons@4.

Command:  python experiments/r1_pipeline.py --config configs/r1_pipeline_tiny.py \
              --workdir runs/r1_pipeline
          python experiments/r1_zero.py --config configs/r1_pipeline_tiny.py --workdir runs/r1_zero
          (R1-Zero alone: the stages base and r1_zero of this recipe)
          --config configs/r1_pipeline_tiny.py:llama   (the Llama student; `llama,runlocal` too)
          --config.base.hf_checkpoint=DIR --config.student_base.hf_checkpoint=DIR2
              (teacher and student imported from Hugging Face directories instead of pretrained;
              README "Start from your own Hugging Face checkpoint")
Tasks where reasoning can grow (arguments, combinable with `llama` and `runlocal`):
          :direct     addition whose corpus solutions state the sum at a glance 70% of the time,
                      carries forgotten ("guess 451" for 482+79: short, right only without a
                      carry), and otherwise work the columns out; the cold start is worked
                      solutions only; the teacher pretrains 2000 steps. Over 3 seeds R1-Zero's
                      rollout accuracy and length rose together (+8.2 points, +1.0 tokens) and
                      the student distilled from R1 beat GRPO alone by 41 ± 15 points pass@1
                      (README "Where distillation beats RL")
          :checked    addition whose solutions guess the sum at a glance, carries forgotten,
                      and 60% of the time check it by working the columns out ("ok" / "no");
                      the teacher pretrains 2000 steps; 64 new tokens. Over 3 seeds R1-Zero's
                      share of checking responses rose with its accuracy and length (+7.7
                      points, +2.4 points, +2.0 tokens; README "R1-Zero learns to check")
          :countdown  Countdown with numbers 1-9, solutions trying up to 6 combinations, each
                      checked ("yes" / "no"; the noisy ones say "yes" to a miss); 128 new tokens.
                      Not yet tuned: R1-Zero did not raise its share of revising responses or
                      its length (the tiny base says "yes" to misses)
          All record the share of responses that check or revise (`revisions`).
Hardware: 2 CPU cores.  (`:runlocal`: every stage for 2 steps on 4 problems, a smoke test.)
Expected: see README.md (the tables this recipe printed, with seeds and the machine).
The RL learning rate 3e-5 was chosen on this base: 1e-4 gained half as much, 3e-4 collapsed the
policy (KL to the reference ~0.9/token).
"""

import dataclasses
import itertools

from r1jax.config import tiny
from r1jax.eval.evaluate import EvalConfig
from r1jax.models.llama import tiny as llama_tiny
from r1jax.models.qwen2 import tiny as qwen2_tiny
from r1jax.recipe.config import (DataSetConfig, GRPOStageConfig, LogitStageConfig, PipelineConfig,
                                 TrainStageConfig)
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.train.experiment import DataConfig, TrainConfig
from r1jax.train.optim import OptimConfig

# Recipe arguments, comma-separated: `runlocal` (the smoke test), the student architecture and
# the task.
ARGS = tuple(",".join(a for a in combo if a) for combo in itertools.product(
    ("", "checked", "countdown", "direct"), ("", "llama"), ("", "runlocal")) if any(combo))
STUDENTS = {"qwen2": qwen2_tiny, "llama": llama_tiny}  # default: qwen2


@dataclasses.dataclass(frozen=True)
class TaskSetup:
    """The task every stage trains and is measured on, and the lengths its traces need."""

    task: str
    task_kwargs: tuple
    max_new_tokens: int  # rollouts, evaluation and data sets
    seq_len: int  # pretraining and SFT rows
    cold_start_kwargs: tuple | None = None  # the cold-start set's task knobs; None: task_kwargs
    teacher_pretrain_steps: int = 1000  # the student's pretraining has 1000 steps in every task

    @property
    def cold_start_task_kwargs(self) -> tuple:
        return self.task_kwargs if self.cold_start_kwargs is None else self.cold_start_kwargs

    @property
    def eval(self) -> EvalConfig:
        return EvalConfig(task=self.task, task_kwargs=self.task_kwargs, num_problems=64, k=4,
                          max_new_tokens=self.max_new_tokens, kl_seq_len=self.seq_len)


TASKS = {
    "arithmetic": TaskSetup("arithmetic", (("max_digits", 2),), max_new_tokens=48, seq_len=128),
    # Solutions guess the sum at a glance, carries forgotten; 60% then check it by working the
    # columns out (r1jax/data/tasks/arithmetic.py): short and often wrong, or longer and right.
    # The teacher pretrains 2000 steps: at 1000 its checks were unreliable (wrong column sums).
    "checked": TaskSetup("arithmetic", (("max_digits", 2), ("check_rate", 0.6)), max_new_tokens=64,
                         seq_len=128, teacher_pretrain_steps=2000),
    # 70% of the corpus' solutions state the sum at a glance, carries forgotten, the rest work the
    # columns out. The cold start is worked solutions only (R1's readable long CoT). The teacher
    # pretrains twice as long as the student (as V3's base outweighs the distilled students'):
    # at 1000 steps on this corpus one seed in three gave a base that could not work the columns
    # out, and no stage after it could.
    "direct": TaskSetup("arithmetic", (("max_digits", 2), ("direct_rate", 0.7)), max_new_tokens=48,
                        seq_len=128, cold_start_kwargs=(("max_digits", 2),),
                        teacher_pretrain_steps=2000),
    # Numbers 1-9; the worked solutions miss up to 6 times before their hit, each further miss
    # with probability 1/2: long searches are rare in the corpus, and so is the pretrained
    # policy's, which says "yes" to a miss in the corpus' noisy traces.
    "countdown": TaskSetup("countdown", (("high", 9), ("max_failed_attempts", 6), ("miss_prob", 0.5)),
                           max_new_tokens=128, seq_len=256),
}
RL_OPTIM = OptimConfig(lr=3e-5, warmup_steps=5, schedule="constant", weight_decay=0.0)
SFT_OPTIM = OptimConfig(lr=5e-4, warmup_steps=10, schedule="cosine")


def pretrain(setup: TaskSetup, name, model, steps=1000):
    return TrainStageConfig(
        name=name, model=model, optim=OptimConfig(lr=3e-3, warmup_steps=20, schedule="cosine"),
        data=DataConfig(task="corpus", corpus_tasks=(setup.task,), seq_len=setup.seq_len,
                        batch_size=16, task_kwargs=setup.task_kwargs),
        train=TrainConfig(steps=steps, log_every=25, ckpt_every=steps), eval=setup.eval)


def sft(setup: TaskSetup, name, steps, cls=TrainStageConfig):
    # The model is the one the stage starts from (r1jax/recipe/stages.py).
    return cls(name=name, optim=SFT_OPTIM,
               data=DataConfig(mode="sft", seq_len=setup.seq_len, batch_size=16),
               train=TrainConfig(steps=steps, log_every=25, ckpt_every=steps), eval=setup.eval)


def rl(setup: TaskSetup, **kw):
    base = GRPOStageConfig(task=setup.task, task_kwargs=setup.task_kwargs, prompts_per_step=8,
                           max_new_tokens=setup.max_new_tokens, optim=RL_OPTIM,
                           grpo=GRPOConfig(group_size=8, kl_beta=0.001),
                           train=TrainConfig(steps=60, log_every=1, ckpt_every=20), eval=setup.eval)
    return dataclasses.replace(base, **kw)


def data_set(setup: TaskSetup, seed, task_kwargs=None):
    knobs = setup.task_kwargs if task_kwargs is None else task_kwargs
    return DataSetConfig(task=setup.task, task_kwargs=knobs, num_prompts=512, k=4, seed=seed,
                         max_new_tokens=setup.max_new_tokens)


def get_config(arg=None):
    options = set((arg or "").split(","))
    student_architecture = "llama" if "llama" in options else "qwen2"
    variants = [t for t in ("checked", "countdown", "direct") if t in options]
    if len(variants) > 1:
        raise ValueError(f"recipe arguments {variants}: choose one task")
    setup = TASKS[variants[0] if variants else "arithmetic"]
    teacher = tiny(vocab_size=512, init_std=0.02)
    student = STUDENTS[student_architecture](vocab_size=512)
    cfg = PipelineConfig(
        name="r1_pipeline_tiny" + "".join(f"_{t}" for t in variants),
        base=pretrain(setup, "base", teacher, steps=setup.teacher_pretrain_steps),
        r1_zero=rl(setup),
        cold_start_data=data_set(setup, seed=7, task_kwargs=setup.cold_start_task_kwargs),
        cold_start=sft(setup, "cold_start", 100),
        # R1 stage-1 RL: clip ratio 10 (S7), which only matters with more than one inner update.
        reasoning_rl=rl(setup, rewards=(("accuracy", 1.0), ("format", 1.0), ("language", 1.0)),
                        grpo=GRPOConfig(group_size=8, kl_beta=0.001, clip_eps=10.0)),
        rejection_data=data_set(setup, seed=8),
        rejection_sft=sft(setup, "rejection_sft", 200),  # ~2 epochs of the kept set, as R1
        final_rl=rl(setup, temperature=0.7),  # R1 stage-2 RL rollouts at T=0.7 (S7)
        student_base=pretrain(setup, "student_base", student),
        student_rl=rl(setup),
        distill_data=data_set(setup, seed=9),
        # The students' SFT steps are derived: the student FLOPs of student_rl (compute_of).
        student_sft=sft(setup, "student_sft", 1),
        student_logit=sft(setup, "student_logit", 1, LogitStageConfig),
    )
    return runlocal(cfg) if "runlocal" in options else cfg


def runlocal(cfg: PipelineConfig) -> PipelineConfig:
    """Every stage for 2 steps on 4 problems, with a 2-layer teacher (a dense and a MoE layer, MTP)
    and a 1-layer student; data sets keep every sample (an untrained teacher is rarely right), so
    each stage has data to train on."""
    smoke_eval = dataclasses.replace(cfg.base.eval, num_problems=4, k=2, prompts_per_batch=4,
                                     max_new_tokens=16)
    two = TrainConfig(steps=2, log_every=1, ckpt_every=2)
    smoke_data = dict(num_prompts=4, k=2, max_new_tokens=16, prompts_per_batch=4,
                      require_correct=False, require_format=False, min_language_consistency=0.0)
    stages = {}
    for name in ("base", "cold_start", "rejection_sft", "student_base", "student_sft",
                 "student_logit"):
        c = getattr(cfg, name)
        data = dataclasses.replace(c.data, batch_size=4, seq_len=64)
        stages[name] = dataclasses.replace(c, data=data, train=two, eval=smoke_eval)
    stages["base"] = dataclasses.replace(stages["base"], model=cfg.base.model.replace(num_layers=2))
    stages["student_base"] = dataclasses.replace(
        stages["student_base"], model=cfg.student_base.model.replace(num_layers=1))
    for name in ("r1_zero", "reasoning_rl", "final_rl", "student_rl"):
        # 4 prompts x 2 samples: the shapes of the evaluation, so both share one compiled sampler.
        stages[name] = dataclasses.replace(getattr(cfg, name), train=two, prompts_per_step=4,
                                           max_new_tokens=16, grpo=GRPOConfig(group_size=2),
                                           eval=smoke_eval)
    for name in ("cold_start_data", "rejection_data", "distill_data"):
        stages[name] = dataclasses.replace(getattr(cfg, name), **smoke_data)
    stages["cold_start_data"] = dataclasses.replace(stages["cold_start_data"], num_prompts=8)
    return dataclasses.replace(cfg, match_student_compute=False, **stages)
