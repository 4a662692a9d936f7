"""The R1 recipe as one table of stage records (R1 §2.3, Nature Methods S7; REFERENCE §3.3, §4.1).

Order, dependencies, what each stage reads and writes, and resuming are all derived from this
table; each stage's settings are the `PipelineConfig` field of the same name (r1jax/recipe/config.py).

  base             pretrain the teacher (MoE-MLA) on the embedded corpus; trains the tokenizer
  r1_zero          GRPO on base (accuracy + format)                                  <- base
  cold_start_data  a small set of clean worked solutions (R1's cold start)
  cold_start       SFT on it (Dev1)                                                  <- base
  reasoning_rl     GRPO, accuracy + format + language consistency (Dev2)             <- cold_start
  rejection_data   rejection-sample Dev2 on training prompts (R1's 600K, in miniature)
  rejection_sft    SFT the BASE on the kept set (Dev3), as R1 §2.3.3                  <- base
  final_rl         GRPO at rollout temperature 0.7 (R1)                              <- rejection_sft
  student_base     pretrain the dense student (Qwen2 or Llama) on the same corpus and tokenizer
  student_rl       GRPO on the student alone                                         <- student_base
  distill_data     rejection-sample R1 on training prompts (R1's 800K, in miniature)
  student_sft      SFT the student on that set (R1-Distill)                          <- student_base
  student_logit    logit distillation (forward KL to R1's top-k) on that set         <- student_base
"""

from __future__ import annotations

import dataclasses

# Stage kinds. Training kinds write checkpoints/ and are evaluated on their held-out set; data
# kinds write a JSONL set under data/.
PRETRAIN, SFT, LOGIT_DISTILL, GRPO = "pretrain", "sft", "logit_distill", "grpo"
WORKED_SOLUTIONS, REJECTION_SAMPLES = "worked_solutions", "rejection_samples"
TRAINING_KINDS = (PRETRAIN, SFT, LOGIT_DISTILL, GRPO)
DATA_KINDS = (WORKED_SOLUTIONS, REJECTION_SAMPLES)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage. Its model is its own config's (pretraining) or that of the stage it starts from
    (training) or of its teacher (data)."""

    name: str
    kind: str
    starts_from: str | None = None  # the stage whose final params this one trains further
    data: str | None = None  # the data stage whose set this one trains on
    teacher: str | None = None  # the policy a data stage samples; a student's teacher (distilled
    #                             from, and measured against: KL to the teacher)
    tokenizer: str | None = "base"  # the stage whose tokenizer it reads; None: trains its own
    compute_of: str | None = None  # its steps spend the student FLOPs of this GRPO stage

    @property
    def is_data(self) -> bool:
        return self.kind in DATA_KINDS

    @property
    def depends_on(self) -> tuple[str, ...]:
        edges = (self.starts_from, self.data, self.teacher, self.tokenizer, self.compute_of)
        return tuple(dict.fromkeys(e for e in edges if e is not None))

    @property
    def writes(self) -> str:
        """Its output, relative to the pipeline's workdir."""
        return f"data/{self.name}.jsonl" if self.is_data else f"{self.name}/checkpoints"


STAGES = (
    Stage("base", PRETRAIN, tokenizer=None),
    Stage("r1_zero", GRPO, starts_from="base"),
    Stage("cold_start_data", WORKED_SOLUTIONS),
    Stage("cold_start", SFT, starts_from="base", data="cold_start_data"),
    Stage("reasoning_rl", GRPO, starts_from="cold_start"),
    Stage("rejection_data", REJECTION_SAMPLES, teacher="reasoning_rl"),
    Stage("rejection_sft", SFT, starts_from="base", data="rejection_data"),
    Stage("final_rl", GRPO, starts_from="rejection_sft"),
    Stage("student_base", PRETRAIN, teacher="final_rl"),
    Stage("student_rl", GRPO, starts_from="student_base", teacher="final_rl"),
    Stage("distill_data", REJECTION_SAMPLES, teacher="final_rl"),
    Stage("student_sft", SFT, starts_from="student_base", data="distill_data", teacher="final_rl",
          compute_of="student_rl"),
    Stage("student_logit", LOGIT_DISTILL, starts_from="student_base", data="distill_data",
          teacher="final_rl", compute_of="student_rl"),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def check_table(stages: tuple[Stage, ...] = STAGES) -> None:
    """Names unique, kinds known, every dependency an earlier stage of the right kind."""
    seen: dict[str, Stage] = {}
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"stage {stage.name!r} appears twice")
        if stage.kind not in TRAINING_KINDS + DATA_KINDS:
            raise ValueError(f"stage {stage.name!r}: kind {stage.kind!r} is not one of "
                             f"{TRAINING_KINDS + DATA_KINDS}")
        for dep in stage.depends_on:
            if dep not in seen:
                raise ValueError(f"stage {stage.name!r} depends on {dep!r}, which is not an "
                                 "earlier stage")
        if stage.data is not None and not seen[stage.data].is_data:
            raise ValueError(f"stage {stage.name!r} trains on {stage.data!r}, not a data stage")
        for field in ("starts_from", "teacher", "compute_of", "tokenizer"):
            dep = getattr(stage, field)
            if dep is not None and seen[dep].is_data:
                raise ValueError(f"stage {stage.name!r}: {field}={dep!r} is a data stage")
        needs_model = stage.kind == PRETRAIN or stage.starts_from or stage.teacher
        if not needs_model and stage.kind != WORKED_SOLUTIONS:
            raise ValueError(f"stage {stage.name!r} ({stage.kind}) has no model to start from")
        seen[stage.name] = stage


def stage(name: str, stages: tuple[Stage, ...] = STAGES) -> Stage:
    for s in stages:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in stages)}")


def needed_stages(wanted, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """`wanted` (names) and everything they depend on, in table order."""
    need, todo = set(), list(wanted)
    while todo:
        s = stage(todo.pop(), stages)
        if s.name not in need:
            need.add(s.name)
            todo += s.depends_on
    return [s for s in stages if s.name in need]


check_table()
