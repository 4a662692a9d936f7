"""Typed configs of the R1 pipeline: one field per stage, each overridable from the command line
(`--config.<stage>.<field>=value`).

Stages and what each starts from (R1 §2.3, Nature Methods S7; REFERENCE §3.3, §4.1):

  base            pretrain the teacher (MoE-MLA) on the embedded corpus
  r1_zero         GRPO on base (accuracy + format)                              <- base
  cold_start      SFT on a small clean CoT set (Dev1)                           <- base
  reasoning_rl    GRPO, accuracy + format + language consistency (Dev2)         <- cold_start
  rejection_data  rejection-sample Dev2 on training prompts (R1's 600K, in miniature)
  rejection_sft   SFT the BASE on the kept set (Dev3), as R1 §2.3.3             <- base
  final_rl        GRPO at rollout temperature 0.7 (R1)                          <- rejection_sft
  student_base    pretrain the dense student (Qwen2) on the same corpus/tokenizer
  student_rl      GRPO on the student alone                                     <- student_base
  distill_data    rejection-sample R1 on training prompts (R1's 800K, in miniature)
  student_sft     SFT the student on that set (R1-Distill)                      <- student_base
  student_logit   logit distillation (forward KL to R1's top-k) on that set     <- student_base
"""

from __future__ import annotations

import dataclasses

from r1jax.eval.evaluate import EvalConfig
from r1jax.rl.grpo_loop import RLConfig
from r1jax.train.experiment import ExperimentConfig

STAGES = ("base", "r1_zero", "cold_start", "reasoning_rl", "rejection_data", "rejection_sft",
          "final_rl", "student_base", "student_rl", "distill_data", "student_sft", "student_logit")


@dataclasses.dataclass(frozen=True)
class DataSetConfig:
    """A JSONL set made by the pipeline (cold-start examples or rejection samples)."""

    num_prompts: int = 512  # distinct training prompts (cold start: examples)
    k: int = 4  # samples per prompt (rejection sampling)
    temperature: float = 0.6  # R1's evaluation sampling, also used to draw SFT data
    top_p: float = 0.95
    max_new_tokens: int = 48
    seed: int = 7  # a stream apart from the RL prompts' (seed 0)
    min_reward: float = 1.0  # keep samples whose accuracy reward reaches this (1 = correct)
    require_format: bool = True  # keep only `<think>..</think> <answer>..</answer>` samples


@dataclasses.dataclass(frozen=True)
class LogitDistillConfig:
    kind: str = "forward_kl"  # forward_kl | reverse_kl | jsd
    temperature: float = 1.0
    beta: float = 0.5  # jsd only
    topk: int = 32  # the teacher's top-k per token, computed online each step; 0 = all logits
    hard_label_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    name: str = "r1_pipeline"
    task: str = "arithmetic"
    task_kwargs: tuple = ()
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)  # one held-out set for all
    base: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    r1_zero: RLConfig = dataclasses.field(default_factory=RLConfig)
    cold_start_data: DataSetConfig = dataclasses.field(default_factory=DataSetConfig)
    cold_start: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    reasoning_rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    rejection_data: DataSetConfig = dataclasses.field(default_factory=DataSetConfig)
    rejection_sft: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    final_rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    student_base: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    student_rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    distill_data: DataSetConfig = dataclasses.field(default_factory=DataSetConfig)
    student_sft: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    student_logit: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    logit: LogitDistillConfig = dataclasses.field(default_factory=LogitDistillConfig)
    # Give student_sft / student_logit the student FLOPs of student_rl (steps derived, not set).
    match_student_compute: bool = True
