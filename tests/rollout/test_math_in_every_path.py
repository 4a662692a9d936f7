"""A user's math data set on disk reaches every path that trains on or judges examples: SFT
batches (`data.task` = the file, its fields mapped by config flags), the GRPO batch source
(`RLConfig.task` = a save_to_disk directory) and evaluation (`EvalConfig.task` = the same).
Each group of two samples holds an answer equivalent to the reference in another notation and
a wrong one; math-verify tells them apart where an exact string comparison would reject both."""

import json
import types

import jax
import numpy as np
import pytest

from r1jax import config, models
from r1jax.data import chat, file_dataset
from r1jax.eval.evaluate import EvalConfig, evaluate, heldout_set
from r1jax.rl.grpo_stage import RLConfig, RolloutBatches
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.sharding import MeshConfig, make_mesh
from r1jax.train import supervised
from r1jax.train.experiment import ExperimentConfig, apply_overrides
from tests.rollout import scripted

PROMPT_LEN = 96
# Plain questions, so that the scripted sampler finds them in the decoded prompts.
GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A pen costs 2 dollars. How much do 5 pens cost?",
     "answer": "5 pens cost 5 * 2 = <<5*2=10>>10 dollars.\n#### 10"},
]
# question -> (an equivalent answer in another notation, a wrong answer)
ANSWERS = {GSM8K_ROWS[0]["question"]: ("7.0", "8"),
           GSM8K_ROWS[1]["question"]: (r"\$10", "12")}


@pytest.fixture(scope="module")
def saved_gsm8k(tmp_path_factory):
    import datasets

    path = tmp_path_factory.mktemp("gsm8k") / "train"
    datasets.Dataset.from_list(GSM8K_ROWS).save_to_disk(str(path))
    return str(path)


def equivalent_then_wrong(question):
    right, wrong = ANSWERS[question]
    return [chat.format_completion("work", right), chat.format_completion("work", wrong)]


def test_grpo_rewards_equivalent_answers(tokenizer, saved_gsm8k, monkeypatch):
    rl = RLConfig(task=saved_gsm8k, prompts_per_step=2, max_prompt_len=PROMPT_LEN,
                  max_new_tokens=24, grpo=GRPOConfig(group_size=2))
    scripted.install(monkeypatch, tokenizer, equivalent_then_wrong)
    model_cfg = config.tiny(vocab_size=512, num_layers=1, first_k_dense=1, num_mtp_modules=0)
    state = types.SimpleNamespace(params=models.init(model_cfg, jax.random.key(0)))
    source = RolloutBatches(model_cfg, rl, tokenizer)
    source.start(make_mesh(MeshConfig()), state)
    batch, metrics = source.next(state)
    assert metrics["accuracy"] == 0.5
    assert metrics["verifier_errors"] == 0
    advantages = np.asarray(batch["advantages"]).reshape(2, 2)
    assert (advantages[:, 0] > 0).all() and (advantages[:, 1] < 0).all()


def test_evaluation_judges_a_test_set_on_disk(tokenizer, saved_gsm8k, monkeypatch):
    cfg = EvalConfig(task=saved_gsm8k, num_problems=2, k=3, prompts_per_batch=2,
                     max_prompt_len=PROMPT_LEN)
    problems = heldout_set(cfg)
    assert problems == list(file_dataset(saved_gsm8k))

    def wrong_then_two_notations(question):
        right, wrong = ANSWERS[question]
        reference = right.replace(".0", "").replace("\\$", "")
        return [chat.format_completion("work", a) for a in (wrong, right, reference)]

    scripted.install(monkeypatch, tokenizer, wrong_then_two_notations)
    result = evaluate(None, None, tokenizer, problems, cfg)
    assert result["pass@1"] == pytest.approx(200 / 3)
    # The two notations of the right answer are one vote (2 of 3): by their text, three
    # answers would tie and the first, wrong one would win.
    assert result["cons@3"] == 100.0
    with pytest.raises(ValueError, match="eval.num_problems=3 but .*train has 2 problems"):
        heldout_set(EvalConfig(task=saved_gsm8k, num_problems=3))


def test_sft_reads_a_mapped_file_through_config_flags(tokenizer, tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text("".join(json.dumps({"q": row["question"], "sol": row["answer"]}) + "\n"
                            for row in GSM8K_ROWS))
    base = ExperimentConfig()
    cfg = apply_overrides(base, [f"--config.data.task={path}", "--config.data.mode=sft",
                                 "--config.data.batch_size=2", "--config.data.seq_len=160",
                                 "--config.data.fields.prompt_field=q",
                                 "--config.data.fields.solution_field=sol"])
    batch = next(iter(supervised.build_dataset(cfg, tokenizer)))
    completions = {tokenizer.decode(batch["targets"][r][batch["loss_mask"][r]]) for r in range(2)}
    assert completions == {
        tokenizer.decode(tokenizer.encode(
            chat.format_completion("Tom has 3 + 4 = 7 apples.", "7"))),
        tokenizer.decode(tokenizer.encode(
            chat.format_completion("5 pens cost 5 * 2 = 10 dollars.", "10")))}
    unmapped = apply_overrides(base, [f"--config.data.task={path}", "--config.data.mode=sft"])
    with pytest.raises(ValueError, match=r"unrecognised layout, fields found: \['q', 'sol'\]"):
        supervised.build_dataset(unmapped, tokenizer)
