"""The R1 pipeline: the stage table and what is derived from it, matched student compute, the
paper tables, the held-out KL to the teacher; the :runlocal recipe end to end in two processes,
resuming (a finished stage is never run again) and R1-Zero as its first two stages."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax import config, models
from r1jax.data.sources import heldout_problems
from r1jax.distill.teacher_kl import heldout_teacher_kl
from r1jax.models import qwen2
from r1jax.recipe import compute, pipeline, stages, tables
from r1jax.rl.grpo_stage import RLConfig
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.train.experiment import DataConfig, TrainConfig, load_config

from tests.recipe.conftest import ROOT, RUNLOCAL, finish, script


def names(stage_list):
    return [s.name for s in stage_list]


def test_needed_stages_follow_the_recipe():
    assert names(stages.needed_stages(("rejection_sft",))) == [
        "base", "cold_start_data", "cold_start", "reasoning_rl", "rejection_data", "rejection_sft"]
    assert names(stages.needed_stages(("r1_zero",))) == ["base", "r1_zero"]
    # The student is measured against (and reads the tokenizer of) the final teacher.
    assert names(stages.needed_stages(("student_rl",))) == [
        "base", "cold_start_data", "cold_start", "reasoning_rl", "rejection_data", "rejection_sft",
        "final_rl", "student_base", "student_rl"]
    with pytest.raises(ValueError, match="unknown stage 'dev4'"):
        stages.needed_stages(("dev4",))


def test_the_table_is_checked():
    stages.check_table()
    bad = [
        ((stages.Stage("a", stages.PRETRAIN, tokenizer=None), stages.Stage("a", stages.SFT)),
         "appears twice"),
        ((stages.Stage("a", stages.SFT, starts_from="b", tokenizer=None),), "not an earlier stage"),
        ((stages.Stage("a", "finetune", tokenizer=None),), "kind 'finetune'"),
        ((stages.Stage("a", stages.PRETRAIN, tokenizer=None),
          stages.Stage("b", stages.SFT, starts_from="a", data="a", tokenizer="a")),
         "not a data stage"),
        ((stages.Stage("d", stages.WORKED_SOLUTIONS, tokenizer=None),
          stages.Stage("b", stages.GRPO, starts_from="d", tokenizer="d")),
         "starts_from='d' is a data stage"),
    ]
    for table, message in bad:
        with pytest.raises(ValueError, match=message):
            stages.check_table(table)
    writes = {s.name: s.writes for s in stages.STAGES}
    assert writes["rejection_data"] == "data/rejection_data.jsonl"
    assert writes["final_rl"] == "final_rl/checkpoints"


def test_every_stage_has_a_config_of_its_kind():
    cfg = load_config(os.path.join(ROOT, "configs", "r1_pipeline_tiny.py"))
    for s in stages.STAGES:
        assert isinstance(getattr(cfg, s.name), pipeline.KIND_CONFIGS[s.kind]), s.name
    wrong = dataclasses.replace(cfg, final_rl=cfg.cold_start)
    with pytest.raises(TypeError, match="final_rl must be a GRPOStageConfig"):
        pipeline.Pipeline(wrong, "/nonexistent-never-written")


def test_the_recipe_picks_the_student_architecture(tmp_path):
    """`:llama` swaps every student stage to the tiny Llama (default: Qwen2, teacher unchanged),
    and the Llama student's pretraining stage runs on the loop."""
    from r1jax.models.llama import LlamaConfig
    from r1jax.train.supervised import run

    path = os.path.join(ROOT, "configs", "r1_pipeline_tiny.py")
    default, with_llama = load_config(path), load_config(f"{path}:llama")
    assert type(default.student_base.model) is qwen2.Qwen2Config
    assert type(with_llama.student_base.model) is LlamaConfig
    assert with_llama.student_base.model.vocab_size == default.student_base.model.vocab_size
    assert with_llama.base == default.base
    smoke = load_config(f"{path}:llama,runlocal")
    assert type(smoke.student_base.model) is LlamaConfig and smoke.student_base.model.num_layers == 1
    history = run(smoke.student_base, str(tmp_path))
    assert [h["step"] for h in history] == [1, 2] and np.isfinite(history[-1]["loss"])


def test_the_direct_recipe_cold_starts_on_worked_solutions_only():
    """`:direct`: the corpus and RL prompts carry direct_rate, the cold-start set (R1's readable
    long CoT) does not; one task argument at a time."""
    path = os.path.join(ROOT, "configs", "r1_pipeline_tiny.py")
    cfg = load_config(f"{path}:direct")
    assert dict(cfg.base.data.task_kwargs) == {"max_digits": 2, "direct_rate": 0.7}
    assert cfg.r1_zero.task_kwargs == cfg.base.data.task_kwargs == cfg.distill_data.task_kwargs
    assert dict(cfg.cold_start_data.task_kwargs) == {"max_digits": 2}
    assert cfg.name == "r1_pipeline_tiny_direct"
    assert (cfg.base.train.steps, cfg.student_base.train.steps) == (2000, 1000)
    with pytest.raises(ValueError, match="unknown recipe argument 'direct,checked'"):
        load_config(f"{path}:direct,checked")


def test_distillation_steps_match_the_student_rl_flops():
    student = qwen2.tiny(vocab_size=512)
    rl = RLConfig(prompts_per_step=8, max_prompt_len=48, max_new_tokens=48,
                  grpo=GRPOConfig(group_size=8), train=TrainConfig(steps=60))
    steps = compute.match_sft_steps(student, rl, 16, 128)
    data = DataConfig(batch_size=16, seq_len=128)
    rl_flops = compute.rl_flops(student, rl)
    per_step = compute.sft_flops(student, data, 1)
    assert abs(compute.sft_flops(student, data, steps) - rl_flops) <= per_step / 2
    # 64 rows x 95 tokens x (1 update + 2/3 forward-only) per GRPO step, at ~the same per-token cost.
    assert steps == pytest.approx(60 * 64 * 95 * (5 / 3) / (16 * 128), rel=0.05)


def test_tables_have_the_paper_layout():
    results = {stage: {"pass@1": 10.0 * i, "cons@4": 11.0 * i, "response_length": 20.0}
               for i, (_, stage) in enumerate(tables.STAGE_COLUMNS)}
    lines = tables.make_table("stages", results).splitlines()
    assert lines[0] == "| held-out metric | Base | R1-Zero | Dev1 | Dev2 | Dev3 | R1 |"
    assert lines[2] == "| pass@1 | 0.0 | 10.0 | 20.0 | 30.0 | 40.0 | 50.0 |"
    assert lines[3].startswith("| cons@4 | 0.0 | 11.0 |")

    results["student_rl"] = {"pass@1": 42.5, "cons@4": 50.0, "KL to teacher": 0.0312,
                             "TFLOP": 0.5}
    results["final_rl"]["TFLOP"] = 9.0  # the teacher's own training is not student compute
    rows = tables.make_table("distill_vs_rl", results).splitlines()
    assert rows[0] == "| model | pass@1 | cons@4 | KL to teacher (nats/token) | student TFLOP |"
    assert "| student + GRPO (RL alone) | 42.5 | 50.0 | 0.0312 | 0.5 |" in rows
    assert "| R1 (teacher, MoE-MLA) | 50.0 | 55.0 |  |  |" in rows
    with pytest.raises(ValueError, match="unknown table"):
        tables.make_table("aime", results)


def test_heldout_teacher_kl(tokenizer):
    tok = tokenizer
    problems = heldout_problems("arithmetic", num_problems=4, max_digits=2)
    teacher_cfg = config.tiny(vocab_size=512)
    student_cfg = qwen2.tiny(vocab_size=512)
    teacher = models.init(teacher_cfg, jax.random.key(0))
    student = models.init(student_cfg, jax.random.key(1))
    assert heldout_teacher_kl(teacher_cfg, teacher, teacher_cfg, teacher, tok, problems) == (
        pytest.approx(0.0, abs=1e-6))
    kl = heldout_teacher_kl(student_cfg, student, teacher_cfg, teacher, tok, problems)
    assert np.isfinite(kl) and kl > 1e-4
    with pytest.raises(ValueError, match="vocab_size=256"):
        heldout_teacher_kl(qwen2.tiny(vocab_size=256), None, teacher_cfg, teacher, tok, problems)


@pytest.mark.slow
def test_every_stage_runs_in_two_processes_and_process_0_writes(two_processes):
    workdir, out = pathlib.Path(two_processes["workdir"]), two_processes["out"]
    results = json.load(open(workdir / "eval.json"))
    assert set(results) == set(stages.STAGE_NAMES)
    for table in tables.TABLES:
        text = open(workdir / f"table_{table}.md").read()
        assert ("rollout accuracy" if table == "r1_zero_curve" else "pass@1") in text
        assert text.split("\n\n", 1)[1] in out[0]
        assert "pass@1" not in out[1]  # process 1 writes and prints nothing shared
    assert "=== base" in out[0] and "===" not in out[1]
    # Both processes ran every stage on the 2-device mesh; the metrics were written once.
    metrics = [json.loads(line) for line in open(workdir / "r1_zero" / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(results[s.name]["steps"] == (0 if s.is_data else 2) for s in stages.STAGES)
    assert "pass@1" in open(workdir / "cold_start" / "eval.md").read()
    lines = open(workdir / "data" / "cold_start_data.jsonl").read().splitlines()
    assert len(lines) == 8 and {"prompt", "completion", "answer", "task"} <= set(json.loads(lines[0]))
    # The stage's wiring, as its own config.json records it.
    recorded = json.load(open(workdir / "cold_start" / "config.json"))
    assert recorded["train"]["init_from"] == str(workdir / "base" / "checkpoints")
    assert recorded["data"]["task"] == str(workdir / "data" / "cold_start_data.jsonl")
    assert recorded["data"]["tokenizer_path"].startswith(str(workdir / "base" / "tokenizer_"))


@pytest.mark.slow
def test_finished_stages_are_skipped_and_lengthened_ones_resume(finished, monkeypatch):
    cfg = load_config(os.path.join(ROOT, RUNLOCAL))
    results = json.load(open(finished / "eval.json"))

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(pipeline.supervised, "run", must_not_run)
    monkeypatch.setattr(pipeline.grpo_stage, "run", must_not_run)
    monkeypatch.setattr(pipeline, "write_sft_jsonl", must_not_run)
    monkeypatch.setattr(pipeline, "evaluate", must_not_run)
    assert pipeline.run(cfg, str(finished)) == results

    # A lengthened stage must run again; if its training stops early (SIGTERM saves and returns),
    # the pipeline stops instead of recording the stage as finished.
    longer = dataclasses.replace(cfg, cold_start=dataclasses.replace(
        cfg.cold_start, train=dataclasses.replace(cfg.cold_start.train, steps=3)))
    monkeypatch.setattr(pipeline.supervised, "run", lambda *args, **kwargs: [])
    with pytest.raises(SystemExit, match="cold_start stopped at step 2 of 3"):
        pipeline.run(longer, str(finished), ("cold_start",))
    assert json.load(open(finished / "eval.json"))["cold_start"]["steps"] == 2


@pytest.mark.slow
def test_r1_zero_is_the_first_two_stages(finished):
    """experiments/r1_zero.py on a pipeline workdir: its stages are done, so it only reports."""
    single = finish(script("r1_zero.py", finished))
    assert "| base |" in single and "| r1_zero |" in single and "===" not in single
    assert (finished / "reward_accuracy.png").exists() and (finished / "table.md").exists()
    assert (finished / "r1_zero_curves.png").exists() and "| rollout accuracy (%) |" in single


@pytest.mark.slow
def test_reproduce_writes_the_curve_table_and_figure_of_a_finished_run(finished):
    """experiments/reproduce.py on a finished workdir runs nothing and reports from eval.json."""
    out = finish(script("reproduce.py", finished, "--table", "r1_zero_curve"))
    assert "===" not in out and "| rollout accuracy (%) |" in out
    assert (finished / "r1_zero_curves.png").stat().st_size > 10_000
    table = open(finished / "table_r1_zero_curve.md").read()
    results = json.load(open(finished / "eval.json"))
    assert tables.make_table("r1_zero_curve", results) in table and "seed 0" in table


@pytest.mark.slow
def test_r1_zero_on_countdown_counts_revisions(tmp_path):
    """The Countdown recipe's R1-Zero stages (smoke sizes) record and report the share of
    responses that revise: held-out, per GRPO step, and in the curve table."""
    args = [sys.executable, os.path.join("experiments", "r1_zero.py"), "--config",
            "configs/r1_pipeline_tiny.py:countdown,runlocal", "--workdir", str(tmp_path)]
    out = finish(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
    results = json.load(open(tmp_path / "eval.json"))
    assert 0 <= results["r1_zero"]["revisions"] <= 100 and "revisions" in results["base"]
    assert set(results["r1_zero"]["rollouts"]) == {"steps", "window", "accuracy",
                                                   "response_length", "revisions"}
    metrics = [json.loads(line) for line in open(tmp_path / "r1_zero" / "metrics.jsonl")]
    assert all(0 <= m["revisions"] <= 100 for m in metrics)
    assert "| responses that check or revise (%) |" in out and "countdown" in out
