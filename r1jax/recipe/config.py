"""Typed configs of the R1 pipeline: one field per stage of r1jax/recipe/stages.py, each
overridable from the command line (`--config.<stage>.<field>=value`).

Every stage carries its own settings: its mesh, its lengths, and (training stages) the held-out
evaluation it is measured with (`eval`). The stage table wires what a stage reads: a stage's
`train.init_from`, `data.tokenizer_path` and, for stages that train on a data stage's set,
`data.task` are set from the table, never from these configs.
"""

from __future__ import annotations

import dataclasses

from r1jax.eval.evaluate import EvalConfig
from r1jax.field_checks import at_least, between, check_fields, one_of, positive
from r1jax.rl.grpo_stage import RLConfig
from r1jax.rollout import DRAFTS, SamplingConfig
from r1jax.sharding import MeshConfig
from r1jax.train.experiment import ExperimentConfig


@dataclasses.dataclass(frozen=True)
class TrainStageConfig(ExperimentConfig):
    """A pretraining or SFT stage: the training run, and the held-out set it is measured on."""

    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


@dataclasses.dataclass(frozen=True)
class LogitDistillConfig:
    kind: str = "forward_kl"  # forward_kl | reverse_kl | jsd
    temperature: float = 1.0
    beta: float = 0.5  # jsd only
    topk: int = 32  # the teacher's top-k per token, computed online each step; 0 = all logits
    hard_label_weight: float = 0.0

    def __post_init__(self):
        check_fields(self, kind=one_of("forward_kl", "reverse_kl", "jsd"), temperature=positive(),
                     beta=between(0, 1), topk=at_least(0), hard_label_weight=between(0, 1))


@dataclasses.dataclass(frozen=True)
class LogitStageConfig(TrainStageConfig):
    """A logit-distillation stage: an SFT run whose loss is a divergence to the teacher."""

    logit: LogitDistillConfig = dataclasses.field(default_factory=LogitDistillConfig)


@dataclasses.dataclass(frozen=True)
class GRPOStageConfig(RLConfig):
    """A GRPO stage: the RL run, and the held-out set it is measured on."""

    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


@dataclasses.dataclass(frozen=True)
class DataSetConfig:
    """A JSONL set made by the pipeline: worked solutions (cold start) or rejection samples."""

    task: str = "arithmetic"
    task_kwargs: tuple = ()
    num_prompts: int = 512  # distinct training prompts (cold start: examples)
    k: int = 4  # samples per prompt (rejection sampling)
    temperature: float = 0.6  # R1's evaluation sampling, also used to draw SFT data
    top_p: float = 0.95
    max_prompt_len: int = 48
    max_new_tokens: int = 48
    prompts_per_batch: int = 16
    seed: int = 7  # a stream apart from the RL prompts' (seed 0)
    require_correct: bool = True  # keep only samples the task's verifier accepts
    require_format: bool = True  # keep only `<think>..</think> <answer>..</answer>` samples
    min_language_consistency: float = 0.9  # R1 drops CoTs that mix languages
    # "mtp": decode speculatively, the model's MTP module drafting (a DeepSeek-V3 config with MTP
    # modules; r1jax/rollout/speculative.py): the same distribution, fewer main-model steps.
    draft: str = "none"
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def __post_init__(self):
        check_fields(self, num_prompts=at_least(1), k=at_least(1), temperature=positive(),
                     top_p=between(0, 1, include_low=False), max_prompt_len=at_least(1),
                     max_new_tokens=at_least(1), prompts_per_batch=at_least(1),
                     min_language_consistency=between(0, 1), draft=one_of(*DRAFTS))

    @property
    def sampling(self) -> SamplingConfig:
        """How the teacher is sampled for a rejection set."""
        return SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                              top_p=self.top_p, draft=self.draft)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    name: str = "r1_pipeline"
    base: TrainStageConfig = dataclasses.field(default_factory=TrainStageConfig)
    r1_zero: GRPOStageConfig = dataclasses.field(default_factory=GRPOStageConfig)
    cold_start_data: DataSetConfig = dataclasses.field(default_factory=DataSetConfig)
    cold_start: TrainStageConfig = dataclasses.field(default_factory=TrainStageConfig)
    reasoning_rl: GRPOStageConfig = dataclasses.field(default_factory=GRPOStageConfig)
    rejection_data: DataSetConfig = dataclasses.field(default_factory=DataSetConfig)
    rejection_sft: TrainStageConfig = dataclasses.field(default_factory=TrainStageConfig)
    final_rl: GRPOStageConfig = dataclasses.field(default_factory=GRPOStageConfig)
    student_base: TrainStageConfig = dataclasses.field(default_factory=TrainStageConfig)
    student_rl: GRPOStageConfig = dataclasses.field(default_factory=GRPOStageConfig)
    distill_data: DataSetConfig = dataclasses.field(default_factory=DataSetConfig)
    student_sft: TrainStageConfig = dataclasses.field(default_factory=TrainStageConfig)
    student_logit: LogitStageConfig = dataclasses.field(default_factory=LogitStageConfig)
    # Stages with `compute_of` get the student FLOPs of that GRPO stage (their steps derived).
    match_student_compute: bool = True


# The config type each stage kind takes.
KIND_CONFIGS = {"pretrain": TrainStageConfig, "sft": TrainStageConfig,
                "logit_distill": LogitStageConfig, "grpo": GRPOStageConfig,
                "worked_solutions": DataSetConfig, "rejection_samples": DataSetConfig}
