"""The Tunix rows of experiments/bench_peers.py.

Without `google-tunix` (CI): what the rows hand to Tunix (ids as text and back, the Qwen2 config
fields) and that the benchmark then reports the rows as not run. With it (requirements-peers.txt,
in its own virtual environment): Tunix's Qwen2, read from the directory `hf.save_checkpoint`
writes, gives r1jax's logits (whole-model tolerance 1e-4) and the same greedy tokens from Tunix's
Sampler, and one step of Tunix's GRPO learner runs on it.
"""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.peers.common import QUICK, random_prompts
from experiments.peers.tunix_inputs import IdTokenizer, as_texts, tunix_qwen2_fields
from r1jax import config, models
from r1jax.interop import hf
from r1jax.models import qwen2
from r1jax.rollout import SamplingConfig, sample


def test_prompt_ids_survive_the_text_round_trip():
    tok = IdTokenizer(vocab_size=512)
    prompts = random_prompts(512, 3, 7)
    assert [tok.encode(t) for t in as_texts(prompts)] == prompts.tolist()
    assert tok.encode(tok.decode([0, 5, 511])) == [0, 5, 511]


def test_no_sampleable_id_is_eos_or_padding():
    tok = IdTokenizer(vocab_size=512)
    assert not 0 <= tok.eos_id() < 512  # no row stops early
    assert not 0 <= tok.pad_id() < 512  # a sampled 0 is not masked as padding
    assert tok.bos_id() is None


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"token ids \[512\] are outside the vocabulary"):
        IdTokenizer(vocab_size=512).encode("3 512")


def test_qwen2_config_fields_for_tunix():
    cfg = qwen2.tiny(num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=True)
    fields = tunix_qwen2_fields(cfg)
    assert fields == {"num_layers": 2, "vocab_size": 512, "embed_dim": 64, "hidden_dim": 128,
                      "num_heads": 4, "head_dim": 16, "num_kv_heads": 2, "rope_theta": 10000.0,
                      "norm_eps": 1e-6, "use_tied_embedding": True}
    with pytest.raises(TypeError, match="the Tunix rows compare Qwen2 models; got ModelConfig"):
        tunix_qwen2_fields(config.deepseek_v3_small())


def test_without_tunix_its_rows_say_not_installed(monkeypatch, capsys):
    from experiments.peers import measure

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tunix" else real_find_spec(name, *a))
    monkeypatch.setattr("sys.argv", ["measure", "--threads", "default", "--peers", "tunix"])
    measure.main()
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows and all(r["skipped"] for r in rows)
    assert {r["peer"] for r in rows} == {"Tunix (google-tunix not installed)"}


@pytest.fixture(scope="module")
def tiny_on_disk(tmp_path_factory):
    pytest.importorskip("tunix")
    cfg = qwen2.tiny()
    params = models.init(cfg, jax.random.key(0))
    directory = str(tmp_path_factory.mktemp("qwen2_tiny"))
    hf.save_checkpoint(cfg, params, directory)
    return cfg, params, directory


def test_tunix_qwen2_gives_our_logits_and_greedy_tokens(tiny_on_disk):
    from experiments.peers import tunix_side

    cfg, params, directory = tiny_on_disk
    model = tunix_side.load_qwen2(directory, cfg)
    tokens = random_prompts(cfg.vocab_size, 2, 24, seed=1)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(models.forward(cfg, params, jnp.asarray(tokens), with_mtp=False)[0])
        theirs = tunix_side.forward_logits(model, tokens)
    assert np.abs(ours).max() > 0.1  # not trivially small
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)

    prompt_len, new = 16, 12
    prompt = random_prompts(cfg.vocab_size, 4, prompt_len)
    ours_tokens = sample(cfg, SamplingConfig(max_new_tokens=new, greedy=True), params, prompt,
                         np.ones_like(prompt, bool), jax.random.key(0))["tokens"]
    theirs_tokens = tunix_side.Generator(model, cfg, prompt_len, new)(prompt)
    assert theirs_tokens.shape == (4, new)
    np.testing.assert_array_equal(theirs_tokens, np.asarray(ours_tokens))


def test_one_tunix_grpo_step_runs(tiny_on_disk):
    from experiments.peers import tunix_side

    cfg, _, directory = tiny_on_disk
    s = QUICK
    run = tunix_side.GRPORun(directory, cfg, prompts=s.grpo_prompts, samples=s.grpo_samples,
                             prompt_len=s.grpo_prompt, new_tokens=s.grpo_new, kl_beta=0.001,
                             clip_eps=0.2,
                             optimizer=tunix_side.tunix_optimizer(1e-5, 0.1, 1.0, 0.95))
    losses = [run.step(random_prompts(cfg.vocab_size, s.grpo_prompts, s.grpo_prompt, seed=i))
              for i in range(2)]
    assert all(np.isfinite(losses))
