"""A user's checkpoint and math data sets through the recipe, end to end on CPU with local
artifacts: a tiny random Qwen2 or DeepSeek-V3 directory (save_pretrained, a BPE tokenizer.json,
a chat template) is imported -> SFT on a MATH-layout JSONL (`problem`, `solution` with \\boxed)
-> GRPO on a GSM8K-layout Parquet (`question`, `answer` ending in `#### n`) rewarded by
math-verify -> export -> transformers greedy-generates r1jax's tokens from the chat-template
prompt -> experiments/evaluate.py on the Parquet file."""

import json
import os

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import transformers

from experiments import evaluate as evaluate_script
from experiments import export as export_script
from r1jax import data as rdata
from r1jax.interop import hf
from r1jax.recipe import stages as table
from r1jax.recipe.pipeline import Pipeline
from r1jax.rollout import SamplingConfig, generate, prompt_batches, score
from r1jax.train.experiment import apply_overrides, load_config
from r1jax.train.hf_start import start_from_hf
from tests.recipe.conftest import ROOT, RUNLOCAL

S = table.Stage
STAGES = (S("base", table.PRETRAIN, tokenizer=None),
          S("cold_start", table.SFT, starts_from="base"),  # trains on the user's file, no data stage
          S("reasoning_rl", table.GRPO, starts_from="cold_start"))
NEW_TOKENS = 10
MATH_ROWS = [{"problem": f"What is ${a} \\cdot {b}$?",
              "solution": f"We multiply: ${a} \\cdot {b} = {a * b}$. The answer is $\\boxed{{{a * b}}}$."}
             for a, b in ((2, 3), (4, 5), (6, 7), (3, 9), (8, 2), (5, 5))]
GSM8K_ROWS = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
               "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
              for a, b in ((1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2))]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("math_data")
    (d / "math_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MATH_ROWS))
    pq.write_table(pa.Table.from_pylist(GSM8K_ROWS), d / "gsm8k_train.parquet")
    return {"sft": str(d / "math_train.jsonl"), "rl": str(d / "gsm8k_train.parquet")}


@pytest.fixture(scope="module")
def checkpoints(hf_checkpoint_dirs, tmp_path_factory):
    """The shared Qwen2 directory, and a DeepSeek-V3 one with the same tokenizer."""
    import pathlib

    from tests.hf_checkpoints import build_checkpoint

    deepseek = build_checkpoint(tmp_path_factory.mktemp("ckpt") / "deepseek_v3", "deepseek_v3",
                                seed=2, tokenizer_from=pathlib.Path(hf_checkpoint_dirs["qwen2"]))
    return {"qwen2": hf_checkpoint_dirs["qwen2"], "deepseek_v3": str(deepseek)}


def overrides(directory, files):
    return [f"--config.base.hf_checkpoint={directory}",
            f"--config.cold_start.data.task={files['sft']}", "--config.cold_start.data.mode=sft",
            "--config.cold_start.data.seq_len=128",
            f"--config.reasoning_rl.task={files['rl']}", "--config.reasoning_rl.max_prompt_len=96",
            f"--config.reasoning_rl.eval.task={files['rl']}",
            "--config.reasoning_rl.eval.max_prompt_len=96"]


def hf_greedy(directory, prompt: np.ndarray, eos_id: int) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        out = model.eval().generate(torch.as_tensor(prompt[None], dtype=torch.long),
                                    do_sample=False, max_new_tokens=NEW_TOKENS,
                                    eos_token_id=eos_id, pad_token_id=eos_id)
    return out[0, len(prompt):].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2", "deepseek_v3"])
def test_math_data_sets_through_the_recipe_from_a_checkpoint(arch, checkpoints, data_files,
                                                              tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    table.check_table(STAGES)
    args = overrides(checkpoints[arch], data_files)
    cfg = start_from_hf(apply_overrides(load_config(os.path.join(ROOT, RUNLOCAL)), args))
    workdir = tmp_path / "run"
    pipeline = Pipeline(cfg, str(workdir), STAGES)
    for s in STAGES:
        pipeline.run_stage(s)
    results = json.load(open(workdir / "eval.json"))
    assert [results[s.name]["steps"] for s in STAGES] == [0, 2, 2]
    sft = json.load(open(workdir / "cold_start" / "config.json"))
    assert sft["data"]["task"] == data_files["sft"] and sft["model"]["vocab_size"] > 0
    rl_steps = [json.loads(line) for line in open(workdir / "reasoning_rl" / "metrics.jsonl")]
    assert len(rl_steps) == 2 and all(r["response_length"] > 0 for r in rl_steps)

    # The GRPO rows are GSM8K records judged by math-verify: a right answer in another form scores.
    examples = list(rdata.file_dataset([data_files["rl"]], rdata.FieldMap()))
    assert examples[0]["task"] == "math" and examples[0]["answer"] == "3"
    judged = score(["<think>1+2</think> <answer>$3.0$</answer>", "<answer>4</answer>"],
                   [examples[0], examples[0]])
    assert judged.correct.tolist() == [True, False]

    # Export the RL stage; transformers generates r1jax's greedy tokens from the chat prompt.
    out = tmp_path / "export"
    export_script.main(["--config", RUNLOCAL, "--workdir", str(workdir), "--stage",
                        "reasoning_rl", "--out", str(out), *args])
    model_cfg, params = hf.load_checkpoint(str(out))
    assert type(model_cfg) is type(pipeline.model_of("reasoning_rl"))
    tok = rdata.load_tokenizer(str(out))
    batch, _ = next(prompt_batches(tok, examples[:1], batch_size=1, max_prompt_len=96))
    prompt = np.asarray(batch["prompt_tokens"][0])[np.asarray(batch["prompt_mask"][0])]
    ours = generate(model_cfg, params, tok, batch,
                    SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=True), jax.random.key(0))
    mine = ours.tokens[0, :ours.lengths[0]].tolist()
    assert len(mine) >= 2 and mine == hf_greedy(str(out), prompt, tok.eos_id)

    report = tmp_path / "eval"
    evaluate_script.main(["--checkpoint", str(out), "--data", data_files["rl"], "--workdir",
                          str(report), "--k", "2", "--max_new_tokens", "8",
                          "--config.eval.max_prompt_len=96"])
    records = [json.loads(line) for line in open(report / "problems.jsonl")]
    assert [r["answer"] for r in records] == [str(a + b) for a, b in
                                               ((1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2))]
