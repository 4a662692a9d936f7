"""The R1 recipe started from Hugging Face directories, end to end on CPU with local artifacts:
a tiny random Qwen2 teacher and Llama student (tests/hf_checkpoints.py: save_pretrained, a BPE
tokenizer.json trained on the corpus, a ChatML chat template) -> the :runlocal pipeline's stages
with `base.hf_checkpoint` / `student_base.hf_checkpoint` (imported, then GRPO, SFT, rejection
sampling and logit distillation, each evaluated) -> export -> transformers loads the export and
greedy-generates r1jax's tokens from the chat-template prompt -> experiments/evaluate.py runs on
it. Also experiments/train.py with `--config.hf_checkpoint` and a GRPO run on its own.

To keep this short it runs the stages of a smaller table (tests/recipe/test_r1_pipeline.py runs
the whole one): the teacher is imported, trained with GRPO and SFT, and distilled into the
imported student.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from experiments import evaluate as evaluate_script
from experiments import export as export_script
from experiments import train as train_script
from r1jax import data as rdata
from r1jax.data.sources import heldout_problems
from r1jax.interop import hf
from r1jax.models.llama import LlamaConfig
from r1jax.models.qwen2 import Qwen2Config
from r1jax.recipe import stages as table
from r1jax.recipe.pipeline import Pipeline
from r1jax.rl import grpo_stage
from r1jax.rl.grpo_stage import RLConfig
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.rollout import SamplingConfig, generate, prompt_batches
from r1jax.train.checkpoint import latest_step, load_params
from r1jax.train.experiment import TrainConfig, apply_overrides, load_config
from r1jax.train.hf_start import start_from_hf
from tests.recipe.conftest import ROOT, RUNLOCAL

S = table.Stage
STAGES = (
    S("base", table.PRETRAIN, tokenizer=None),
    S("r1_zero", table.GRPO, starts_from="base"),
    S("cold_start_data", table.WORKED_SOLUTIONS),
    S("cold_start", table.SFT, starts_from="base", data="cold_start_data"),
    S("student_base", table.PRETRAIN, teacher="cold_start"),
    S("distill_data", table.REJECTION_SAMPLES, teacher="cold_start"),
    S("student_logit", table.LOGIT_DISTILL, starts_from="student_base", data="distill_data",
      teacher="cold_start"),
)
NEW_TOKENS = 12


def starts(dirs):
    return [f"--config.base.hf_checkpoint={dirs['qwen2']}",
            f"--config.student_base.hf_checkpoint={dirs['llama']}"]


@pytest.fixture(scope="module")
def finished(hf_checkpoint_dirs, tmp_path_factory):
    table.check_table(STAGES)
    recipe = load_config(os.path.join(ROOT, RUNLOCAL))
    cfg = start_from_hf(apply_overrides(recipe, starts(hf_checkpoint_dirs)))
    workdir = tmp_path_factory.mktemp("pipeline")
    pipeline = Pipeline(cfg, str(workdir), STAGES)
    for s in STAGES:
        pipeline.run_stage(s)
    return workdir, pipeline


@pytest.mark.slow
def test_imported_stages_are_trained_on_and_recorded(finished, hf_checkpoint_dirs):
    workdir, pipeline = finished
    results = json.load(open(workdir / "eval.json"))
    assert list(results) == [s.name for s in STAGES]
    for name, arch in (("base", "qwen2"), ("student_base", "llama")):
        assert results[name]["steps"] == 0 and latest_step(str(workdir / name / "checkpoints")) == 0
        assert results[name]["imported from"] == hf_checkpoint_dirs[arch]
        assert "pass@1" in results[name]
        _, expected = hf.load_checkpoint(hf_checkpoint_dirs[arch])  # written as read
        for a, b in zip(jax.tree.leaves(pipeline.params(name)), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "KL to teacher" in results["student_base"] and "KL to teacher" in results["student_logit"]
    assert isinstance(pipeline.model_of("r1_zero"), Qwen2Config)
    assert isinstance(pipeline.model_of("student_logit"), LlamaConfig)
    # Every stage reads the checkpoint's tokenizer; training moved the params away from the
    # import (GRPO on a random model has no reward to follow, so SFT is what moves them).
    assert isinstance(pipeline.tok, rdata.HFTokenizer) and pipeline.tok.path == hf_checkpoint_dirs["qwen2"]
    assert latest_step(str(workdir / "r1_zero" / "checkpoints")) == 2
    rollouts = [json.loads(line) for line in open(workdir / "r1_zero" / "metrics.jsonl")]
    assert len(rollouts) == 2 and all(r["response_length"] > 0 for r in rollouts)
    for trained, imported in (("cold_start", "base"), ("student_logit", "student_base")):
        moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
            jax.tree.leaves(pipeline.params(trained)), jax.tree.leaves(pipeline.params(imported)))]
        assert max(moved) > 0


@pytest.mark.slow
def test_a_rerun_skips_the_import_and_another_checkpoint_is_refused(finished, hf_checkpoint_dirs):
    workdir, pipeline = finished
    again = Pipeline(pipeline.cfg, str(workdir), STAGES)
    assert all(again.done(s.name) for s in STAGES)
    recipe = load_config(os.path.join(ROOT, RUNLOCAL))
    other = start_from_hf(apply_overrides(recipe, [
        f"--config.base.hf_checkpoint={hf_checkpoint_dirs['llama']}",
        f"--config.student_base.hf_checkpoint={hf_checkpoint_dirs['llama']}"]))
    changed = Pipeline(other, str(workdir), STAGES)
    assert not changed.done("base")
    with pytest.raises(ValueError, match="holds checkpoints of another model or data "
                                         "\\(hf_checkpoint: .*qwen2' -> .*llama'"):
        changed.run_stage(STAGES[0])
    assert json.load(open(workdir / "eval.json"))["base"]["imported from"] == hf_checkpoint_dirs["qwen2"]


def hf_greedy(directory, prompt: np.ndarray, eos_id: int) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.as_tensor(prompt[None], dtype=torch.long), do_sample=False,
                             max_new_tokens=NEW_TOKENS, eos_token_id=eos_id, pad_token_id=eos_id)
    return out[0, len(prompt):].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["r1_zero", "student_logit"])
def test_exported_stage_generates_like_r1jax_in_transformers(finished, hf_checkpoint_dirs,
                                                             tmp_path, stage, monkeypatch):
    workdir, pipeline = finished
    monkeypatch.chdir(ROOT)
    out = tmp_path / stage
    export_script.main(["--config", RUNLOCAL, "--workdir", str(workdir), "--stage", stage,
                        "--out", str(out), *starts(hf_checkpoint_dirs)])
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(os.listdir(out))
    model_cfg, params = hf.load_checkpoint(str(out))
    expected = pipeline.model_of(stage)  # scan_layers is a run option, not in config.json
    assert dataclasses.replace(model_cfg, scan_layers=expected.scan_layers) == expected
    tok = rdata.load_tokenizer(str(out))
    reference = transformers.AutoTokenizer.from_pretrained(str(out))
    problem = heldout_problems("arithmetic", num_problems=1, max_digits=2)
    batch, _ = next(prompt_batches(tok, problem, batch_size=1, max_prompt_len=48))
    prompt = np.asarray(batch["prompt_tokens"][0])[np.asarray(batch["prompt_mask"][0])]
    from r1jax.data.chat_prompts import user_message

    assert prompt.tolist() == reference.apply_chat_template(
        [user_message(problem[0])], add_generation_prompt=True)["input_ids"]
    ours = generate(model_cfg, params, tok, batch,
                    SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=True), jax.random.key(0))
    mine = ours.tokens[0, :ours.lengths[0]].tolist()
    assert len(mine) >= 2 and mine == hf_greedy(str(out), prompt, tok.eos_id)
    saved = load_params(model_cfg, str(workdir / stage / "checkpoints"))
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # float32: exact


@pytest.mark.slow
def test_evaluate_an_exported_stage(finished, hf_checkpoint_dirs, tmp_path, monkeypatch):
    workdir, _ = finished
    monkeypatch.chdir(ROOT)
    out, report = tmp_path / "hf", tmp_path / "eval"
    export_script.main(["--config", RUNLOCAL, "--workdir", str(workdir), "--stage", "cold_start",
                        "--out", str(out), *starts(hf_checkpoint_dirs)])
    evaluate_script.main(["--checkpoint", str(out), "--data", "arithmetic", "--workdir",
                          str(report), "--k", "2", "--num_problems", "2",
                          "--max_new_tokens", "8", "--config.eval.prompts_per_batch=2"])
    records = [json.loads(line) for line in open(report / "problems.jsonl")]
    assert len(records) == 2 and all(len(r["texts"]) == 2 for r in records)


@pytest.mark.slow
def test_train_and_grpo_start_from_a_checkpoint(hf_checkpoint_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    directory = hf_checkpoint_dirs["llama"]
    train_script.main(["--config", "configs/sft_tiny.py:runlocal", "--workdir", str(tmp_path / "sft"),
                       f"--config.hf_checkpoint={directory}", "--config.data.task=arithmetic",
                       "--config.data.seq_len=64"])
    saved = json.load(open(tmp_path / "sft" / "config.json"))
    assert saved["model"]["vocab_size"] == hf.read_model_config(directory).vocab_size
    assert saved["model"]["num_layers"] == 2 and saved["data"]["tokenizer_path"] == directory
    assert latest_step(str(tmp_path / "sft" / "checkpoints")) == 2
    rl = RLConfig(hf_checkpoint=directory, prompts_per_step=2, max_new_tokens=8,
                  grpo=GRPOConfig(group_size=2), train=TrainConfig(steps=1, log_every=1, ckpt_every=1))
    history = grpo_stage.run(None, rl, None, str(tmp_path / "grpo"))
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
