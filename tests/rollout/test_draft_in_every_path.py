"""MTP speculative decoding chosen from the configs of evaluation, GRPO and rejection sampling
(`draft="mtp"`): each path hands it to the sampler; evaluation decodes a model without an MTP
module plainly (one EvalConfig serves a recipe's teacher and students); GRPO refuses such a model
before anything is compiled."""

import types

import jax
import pytest

from r1jax import config, data, models
from r1jax.eval.evaluate import EvalConfig, sample_problems
from r1jax.models import qwen2
from r1jax.recipe.config import DataSetConfig
from r1jax.rl.grpo_stage import RLConfig, RolloutBatches
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.rollout import sampling
from r1jax.sharding import MeshConfig, make_mesh
from tests.rollout import scripted


@pytest.mark.parametrize("config_class", [EvalConfig, RLConfig, DataSetConfig])
def test_an_unknown_draft_is_refused(config_class):
    with pytest.raises(ValueError, match=r"draft='eagle' must be one of \('none', 'mtp'\)"):
        config_class(draft="eagle")


def test_evaluation_drafts_with_mtp_where_the_model_has_it(tokenizer, monkeypatch):
    drafted = []

    def counted(cfg, *args):
        drafted.append(type(cfg).__name__)
        return speculative(cfg, *args)

    speculative = sampling.sample_speculative
    monkeypatch.setattr(sampling, "sample_speculative", counted)
    eval_cfg = EvalConfig(num_problems=2, k=2, prompts_per_batch=2, max_new_tokens=6, draft="mtp")
    problems = data.heldout_problems("arithmetic", num_problems=2)
    teacher = config.tiny(vocab_size=tokenizer.vocab_size, num_layers=2)  # one MTP module
    student = qwen2.tiny(vocab_size=tokenizer.vocab_size)
    for model_cfg in (teacher, student):
        params = models.init(model_cfg, jax.random.key(0))
        records = sample_problems(model_cfg, params, tokenizer, problems, eval_cfg)
        assert [len(r["texts"]) for r in records] == [2, 2]
        assert all(0 < n <= 6 for r in records for n in r["lengths"])
    assert drafted == ["ModelConfig"]  # the teacher drafted; the dense student decoded plainly


def test_grpo_rollouts_draft_with_mtp(tokenizer, monkeypatch):
    calls = scripted.install(monkeypatch, tokenizer, lambda question: ["<think> a </think>"] * 2)
    rl = RLConfig(prompts_per_step=2, max_new_tokens=8, grpo=GRPOConfig(group_size=2),
                  draft="mtp")
    model_cfg = config.tiny(vocab_size=tokenizer.vocab_size, num_layers=1, first_k_dense=1)
    state = types.SimpleNamespace(params=models.init(model_cfg, jax.random.key(0)))
    source = RolloutBatches(model_cfg, rl, tokenizer)
    source.start(make_mesh(MeshConfig()), state)
    source.next(state)
    assert [call["scfg"].draft for call in calls] == ["mtp"]
    with pytest.raises(ValueError, match="MTP drafting needs a DeepSeek-V3 config"):
        RolloutBatches(qwen2.tiny(vocab_size=tokenizer.vocab_size), rl, tokenizer)


def test_rejection_sampling_drafts_with_mtp():
    assert DataSetConfig(draft="mtp").sampling.draft == "mtp"
    assert DataSetConfig().sampling.draft == "none"
