"""Pipeline stages exported as Hugging Face directories: transformers loads them and greedy-
generates the tokens r1jax generates; experiments/evaluate.py evaluates them; bad input ends in
a message naming what is wrong."""

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from experiments import evaluate as evaluate_script
from experiments import export as export_script
from r1jax import data as rdata
from r1jax.data.sources import heldout_problems
from r1jax.interop import hf
from r1jax.recipe.export import stage_model
from r1jax.rollout import SamplingConfig, generate, prompt_batches
from r1jax.train.checkpoint import load_params
from r1jax.train.experiment import load_config
from tests.recipe.conftest import ROOT, RUNLOCAL

NEW_TOKENS = 12


def export(workdir, stage, out, *overrides):
    export_script.main(["--config", RUNLOCAL, "--workdir", str(workdir), "--stage", stage,
                        "--out", str(out), *overrides])


def hf_greedy(directory, prompt: np.ndarray, eos_id: int) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.as_tensor(prompt[None], dtype=torch.long), do_sample=False,
                             max_new_tokens=NEW_TOKENS, eos_token_id=eos_id, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["final_rl", "student_rl"])
def test_exported_stage_generates_like_r1jax_in_transformers(finished, tmp_path, stage,
                                                             monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / stage
    export(finished, stage, out)
    cfg = load_config(os.path.join(ROOT, RUNLOCAL))
    model_cfg, params = hf.load_checkpoint(str(out))
    assert type(model_cfg) is type(stage_model(cfg, stage))
    saved = load_params(stage_model(cfg, stage), str(finished / stage / "checkpoints"))
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # float32: exact

    tok = rdata.Tokenizer(str(out / "tokenizer.model"))
    problem = heldout_problems("arithmetic", num_problems=1, max_digits=2)
    batch, _ = next(prompt_batches(tok, problem, batch_size=1, max_prompt_len=48))
    prompt = np.asarray(batch["prompt_tokens"][0])[np.asarray(batch["prompt_mask"][0])]
    ours = generate(model_cfg, params, tok, batch, SamplingConfig(max_new_tokens=NEW_TOKENS,
                                                                   greedy=True),
                    jax.random.key(0))
    mine = ours.tokens[0, :ours.lengths[0]].tolist()
    assert mine == hf_greedy(str(out), prompt, tok.eos_id)


@pytest.mark.slow
def test_evaluate_an_exported_stage(finished, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out, report = tmp_path / "hf", tmp_path / "eval"
    export(finished, "final_rl", out)
    evaluate_script.main(["--checkpoint", str(out), "--data", "arithmetic", "--workdir",
                          str(report), "--k", "2", "--pass_k", "2", "--num_problems", "3",
                          "--max_new_tokens", "8", "--config.eval.prompts_per_batch=2"])
    records = [json.loads(line) for line in open(report / "problems.jsonl")]
    assert len(records) == 3 and all(len(r["texts"]) == len(r["correct"]) == 2 for r in records)
    summary = json.load(open(report / "summary.json"))
    assert summary["pass@1"] == pytest.approx(100 * np.mean([r["correct"] for r in records]))
    assert {"pass@2", "cons@2", "response_length"} <= set(summary)
    assert "| pass@1 | pass@2 | cons@2 |" in capsys.readouterr().out

    # A test file in the GSM8K layout: every row is evaluated unless --num_problems says otherwise.
    gsm8k = tmp_path / "test.jsonl"
    gsm8k.write_text("".join(json.dumps({"question": f"What is {i} + {i}?",
                                         "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n"
                                                   f"#### {2 * i}"}) + "\n" for i in range(5)))
    evaluate_script.main(["--checkpoint", str(out), "--data", str(gsm8k), "--workdir",
                          str(report), "--k", "1", "--max_new_tokens", "4"])
    records = [json.loads(line) for line in open(report / "problems.jsonl")]
    assert [r["answer"] for r in records] == ["0", "2", "4", "6", "8"]
    assert json.load(open(report / "summary.json"))["data"] == f"{gsm8k} (5 problems)"


def test_bad_input_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cases = [
        (lambda: export(tmp_path, "rejection_data", tmp_path / "x"),
         "stage 'rejection_data' writes a data set, not a model"),
        (lambda: export(tmp_path, "final_rl", tmp_path / "x"),
         f"stage 'final_rl' has no checkpoint in {tmp_path}/final_rl/checkpoints"),
        (lambda: export(tmp_path, "dev4", tmp_path / "x"), "--stage='dev4' is not a stage"),
        (lambda: export(tmp_path, "final_rl", tmp_path / "x", "--num_processes", "2"),
         "experiments/export.py runs in a single process; drop --num_processes"),
        (lambda: evaluate_script.main(["--checkpoint", str(tmp_path / "none"), "--data",
                                       "arithmetic", "--workdir", str(tmp_path / "e")]),
         f"checkpoint directory {tmp_path}/none does not exist"),
        (lambda: evaluate_script.main(["--checkpoint", str(tmp_path), "--data", "gsm9k",
                                       "--workdir", str(tmp_path / "e")]),
         "--data gsm9k: no such file, and not an embedded task"),
        (lambda: evaluate_script.main(["--checkpoint", str(tmp_path), "--data", "arithmetic",
                                       "--workdir", str(tmp_path / "e"), "--k", "2",
                                       "--pass_k", "4"]),
         r"pass_k=\(1, 4\): each k must be an integer in \[1, eval.k=2\]"),
    ]
    for run, message in cases:
        with pytest.raises(SystemExit, match=message):
            run()


def test_a_changed_model_is_refused(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    changed = "another model or data \\(model.hidden_size: 64 -> 96\\)"
    with pytest.raises(SystemExit, match=changed):
        export(finished, "r1_zero", tmp_path / "x", "--config.base.model.hidden_size=96")
    assert not (tmp_path / "x").exists()
