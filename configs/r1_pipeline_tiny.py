"""The R1 recipe in miniature on 1-2 digit addition, every stage on 2 CPU cores.

Teacher: the tiny MoE-MLA model. Base -> R1-Zero (GRPO); cold-start SFT on 512 clean worked
solutions (Dev1) -> reasoning GRPO with accuracy + format + language consistency (Dev2) ->
rejection sampling of Dev2 (4 samples on 512 training prompts, correct + well-formed + readable
kept) and SFT of the base on the kept set (Dev3) -> GRPO at rollout temperature 0.7 (R1).
Student: a dense tiny Qwen2 (140K params vs the teacher's 176K activated) pretrained on the same
corpus, then either GRPO alone or distillation from R1 (SFT on R1's rejection samples, or
forward-KL logit distillation on the same set), at the student FLOPs of its GRPO run.
Held-out: 64 problems, pass@1 over k=4 samples at T=0.6 / top-p 0.95, cons@4.

Command:  python experiments/r1_pipeline.py --config configs/r1_pipeline_tiny.py --workdir runs/r1_pipeline
Hardware: 2 CPU cores.  (`:runlocal`: every stage for 2 steps on 4 problems, a smoke test.)
Expected (measured, seed 0; 1177 s): pass@1 base 63.3, R1-Zero 85.5, Dev1 92.6, Dev2 94.1,
Dev3 93.0, R1 90.2. Student: base 84.4, GRPO alone 98.0, SFT on R1 samples 99.2, logit KD 98.0
(all at 0.435 student TFLOP); held-out KL to R1 0.028 -> 0.024 (GRPO) / 0.043 (SFT) / 0.014 (KD).
"""

import dataclasses

from r1jax.config import tiny
from r1jax.eval.evaluate import EvalConfig
from r1jax.models.qwen2 import tiny as qwen2_tiny
from r1jax.recipe.config import DataSetConfig, PipelineConfig
from r1jax.rl.grpo_loop import RLConfig
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.train.experiment import DataConfig, ExperimentConfig, TrainConfig
from r1jax.train.optim import OptimConfig

DIGITS = (("max_digits", 2),)
RL_OPTIM = OptimConfig(lr=3e-5, warmup_steps=5, schedule="constant", weight_decay=0.0)
SFT_OPTIM = OptimConfig(lr=5e-4, warmup_steps=10, schedule="cosine")


def pretrain(name, model, steps=1000):
    return ExperimentConfig(
        name=name, model=model, optim=OptimConfig(lr=3e-3, warmup_steps=20, schedule="cosine"),
        data=DataConfig(task="corpus", corpus_tasks=("arithmetic",), seq_len=128, batch_size=16,
                        task_kwargs=DIGITS),
        train=TrainConfig(steps=steps, log_every=25, ckpt_every=steps))


def sft(name, model, steps):
    return ExperimentConfig(name=name, model=model, optim=SFT_OPTIM,
                            data=DataConfig(mode="sft", seq_len=128, batch_size=16),
                            train=TrainConfig(steps=steps, log_every=25, ckpt_every=steps))


def rl(**kw):
    base = RLConfig(steps=60, prompts_per_step=8, max_new_tokens=48, optim=RL_OPTIM,
                    grpo=GRPOConfig(group_size=8, kl_beta=0.001, aggregation="grpo"))
    return dataclasses.replace(base, **kw)


def get_config(arg=None):
    teacher, student = tiny(vocab_size=512, init_std=0.02), qwen2_tiny(vocab_size=512)
    cfg = PipelineConfig(
        name="r1_pipeline_tiny", task="arithmetic", task_kwargs=DIGITS,
        eval=EvalConfig(num_problems=64, k=4, max_new_tokens=48),
        base=pretrain("base", teacher),
        r1_zero=rl(),
        cold_start_data=DataSetConfig(num_prompts=512, seed=7),
        cold_start=sft("cold_start", teacher, 100),
        # R1 stage-1 RL: clip ratio 10 (S7), which only matters with more than one inner update.
        reasoning_rl=rl(rewards=(("accuracy", 1.0), ("format", 1.0), ("language", 1.0)),
                        grpo=GRPOConfig(group_size=8, kl_beta=0.001, clip_eps=10.0)),
        rejection_data=DataSetConfig(num_prompts=512, k=4, seed=8),
        rejection_sft=sft("rejection_sft", teacher, 200),  # ~2 epochs of the kept set, as R1
        final_rl=rl(temperature=0.7),  # R1 stage-2 RL rollouts at T=0.7 (S7)
        student_base=pretrain("student_base", student),
        student_rl=rl(),
        distill_data=DataSetConfig(num_prompts=512, k=4, seed=9),
        student_sft=sft("student_sft", student, 0),  # steps matched to student_rl's FLOPs
        student_logit=sft("student_logit", student, 0),
    )
    if arg == "runlocal":
        two = dict(steps=2, prompts_per_step=2, max_new_tokens=16,
                   grpo=GRPOConfig(group_size=2), eval=EvalConfig(num_problems=4, k=2))
        smoke = DataSetConfig(num_prompts=4, k=2, max_new_tokens=16, min_reward=-1.0,
                              require_format=False)
        short = lambda c: dataclasses.replace(  # noqa: E731
            c, data=dataclasses.replace(c.data, batch_size=4, seq_len=64),
            train=dataclasses.replace(c.train, steps=2, log_every=1, ckpt_every=2))
        cfg = dataclasses.replace(
            cfg, eval=EvalConfig(num_problems=4, k=2, prompts_per_batch=4, max_new_tokens=16),
            match_student_compute=False, cold_start_data=dataclasses.replace(smoke, num_prompts=8),
            rejection_data=smoke, distill_data=smoke,
            **{name: short(getattr(cfg, name)) for name in
               ("base", "cold_start", "rejection_sft", "student_base", "student_sft", "student_logit")},
            **{name: dataclasses.replace(getattr(cfg, name), **two) for name in
               ("r1_zero", "reasoning_rl", "final_rl", "student_rl")})
    return cfg
