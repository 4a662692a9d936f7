"""Speculative decoding with MTP drafts [V3 §5.4.3]: greedy output identical to plain greedy
decoding, sampled output distributed as plain sampling, the verification rule exact, and stops,
max_new_tokens and logprobs as `sample` defines them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config, models
from r1jax.models import qwen2
from r1jax.rollout.sampling import SamplingConfig, filter_logits, sample
from r1jax.rollout.speculative import accept_or_resample

from tests.rollout.test_sampling import full_forward_logprobs, left_padded_prompts

CFG = config.tiny(num_layers=2, init_std=0.1)  # a dense and a MoE layer, one MTP module


def bigram_drafter(params: dict, residual_scale: float) -> dict:
    """Params whose MTP module drafts well: every attention and FFN residual scaled by
    `residual_scale`, so the main model's next token is mostly f(current token) =
    argmax head(norm(emb)); the MTP module keeps only the embedding half of its input
    (eh_proj = [I; 0]), so it drafts f(token i+1) for token i+2. At scale 0 it drafts perfectly;
    a small nonzero scale makes the main model deviate now and then: some drafts are rejected."""
    def shrink(path, x):
        name = jax.tree_util.keystr(path)
        return x * residual_scale if name.endswith("['o']") or name.endswith("['down']") else x

    params = jax.tree_util.tree_map_with_path(shrink, params)
    d = params["embed"].shape[1]
    eh_proj = jnp.concatenate([jnp.eye(d), jnp.zeros((d, d))], axis=0)  # (2D, D): [emb; h] -> emb
    return {**params, "mtp": {**params["mtp"], 0: {**params["mtp"][0], "eh_proj": eh_proj}}}


@pytest.mark.parametrize("drafter", ["random", "perfect", "mostly_right"])
def test_greedy_speculative_equals_plain_greedy(drafter):
    params = models.init(CFG, jax.random.key(0))
    if drafter != "random":
        params = bigram_drafter(params, residual_scale=0.0 if drafter == "perfect" else 0.05)
    prompt, pmask = left_padded_prompts(CFG)
    # An odd N: an accepted draft's second token past N must be dropped.
    plain_cfg = SamplingConfig(max_new_tokens=11, greedy=True)
    with jax.default_matmul_precision("highest"):
        plain = sample(CFG, plain_cfg, params, prompt, pmask, jax.random.key(1))
        spec = sample(CFG, SamplingConfig(max_new_tokens=11, greedy=True, draft="mtp"), params,
                      prompt, pmask, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(spec["tokens"]), np.asarray(plain["tokens"]))
    np.testing.assert_array_equal(np.asarray(spec["mask"]), np.asarray(plain["mask"]))
    np.testing.assert_allclose(np.asarray(spec["logprobs"]), np.asarray(plain["logprobs"]),
                               atol=1e-5)
    proposed, accepted = int(spec["drafts_proposed"].sum()), int(spec["drafts_accepted"].sum())
    # Every step after the first token yields 1 token, plus 1 per accepted draft; at most N.
    assert proposed + accepted >= 3 * 10 and proposed <= 3 * 10
    if drafter == "perfect":  # the first token, then 5 steps of 2 tokens per row
        assert np.asarray(spec["drafts_accepted"]).tolist() == [5, 5, 5] == np.asarray(
            spec["drafts_proposed"]).tolist()
    if drafter == "mostly_right":
        assert 0 < accepted < proposed, f"accepted {accepted} of {proposed}: one path untested"


def test_accept_or_resample_output_is_distributed_as_p():
    """Draft ~ q, then the rule: the output follows p exactly, whatever q (here far from p, with
    a token q never drafts and one p never produces), and drafts are accepted at sum min(p, q)."""
    p = np.array([0.5, 0.2, 0.15, 0.15, 0.0])
    q = np.array([0.1, 0.4, 0.0, 0.2, 0.3])
    rows = 200_000
    draft_key, rule_key = jax.random.split(jax.random.key(0))
    p_logits = jnp.log(jnp.broadcast_to(jnp.asarray(p, jnp.float32), (rows, 5)))
    q_logits = jnp.log(jnp.broadcast_to(jnp.asarray(q, jnp.float32), (rows, 5)))
    draft = jax.random.categorical(draft_key, q_logits).astype(jnp.int32)
    token, accepted = accept_or_resample(p_logits, q_logits, draft, rule_key)
    freq = np.bincount(np.asarray(token), minlength=5) / rows
    # TV of 200k draws from 4 live outcomes: about 0.002 expected; 0.006 is ~5 standard errors.
    tv = 0.5 * np.abs(freq - p).sum()
    assert tv < 0.006, f"output distribution {freq} is {tv:.4f} from p {p}"
    assert 0.5 * np.abs(q - p).sum() > 0.3  # accepting every draft would fail the bound above
    assert freq[4] == 0  # never a token p excludes
    assert abs(float(accepted.mean()) - np.minimum(p, q).sum()) < 0.005


def exact_token_distributions(cfg, params, prompt, temperature, top_p, steps):
    """Marginals (steps, V) of the first `steps` sampled tokens, by enumerating every prefix."""
    v = cfg.vocab_size
    marginals, prefix_probs, prefixes = [], np.ones(1), np.zeros((1, 0), np.int32)
    for _ in range(steps):
        seq = np.concatenate([np.repeat(prompt, len(prefixes), 0), prefixes], axis=1)
        logits, _ = models.forward(cfg, params, jnp.asarray(seq), with_mtp=False)
        probs = np.asarray(jax.nn.softmax(filter_logits(logits[:, -1], temperature=temperature,
                                                        top_p=top_p, top_k=0), axis=-1))  # (K, V)
        joint = prefix_probs[:, None] * probs  # (K, V)
        marginals.append(joint.sum(0))
        prefix_probs = joint.reshape(-1)
        prefixes = np.concatenate([np.repeat(prefixes, v, 0),
                                   np.tile(np.arange(v, dtype=np.int32), len(prefixes))[:, None]],
                                  axis=1)
    return np.stack(marginals)


def test_sampled_speculative_matches_the_exact_token_distribution():
    """4096 samples of one prompt on an 8-token vocabulary: the marginal of each of the first 3
    tokens matches the model's exact distribution (every prefix enumerated), at T=0.8, top-p 0.9."""
    cfg = config.tiny(vocab_size=8, num_layers=2, init_std=0.1)
    params = models.init(cfg, jax.random.key(4))
    prompt = np.array([[3, 1, 4, 1, 5]], np.int32)
    g, temperature, top_p = 4096, 0.8, 0.9
    scfg = SamplingConfig(max_new_tokens=3, temperature=temperature, top_p=top_p, num_samples=g,
                          draft="mtp")
    with jax.default_matmul_precision("highest"):
        out = sample(cfg, scfg, params, jnp.asarray(prompt), jnp.ones_like(prompt, bool),
                     jax.random.key(5))
        exact = exact_token_distributions(cfg, params, prompt, temperature, top_p, steps=3)
        _, aux = models.forward(cfg, params, jnp.asarray(prompt))
    toks = np.asarray(out["tokens"])
    proposed, accepted = int(out["drafts_proposed"].sum()), int(out["drafts_accepted"].sum())
    assert 0 < accepted < proposed  # both the accept and the resample path ran
    # TV of 4096 draws over 8 outcomes: about 0.02 expected; 0.05 is ~4 standard errors.
    for i in range(3):
        freq = np.bincount(toks[:, i], minlength=8) / g
        tv = 0.5 * np.abs(freq - exact[i]).sum()
        assert tv < 0.05, f"token {i + 1}: sampled {freq} vs exact {exact[i]} (TV {tv:.3f})"
    # The drafter alone is far from the target: following its drafts unverified would fail.
    drafter = np.asarray(jax.nn.softmax(filter_logits(aux["mtp_logits"][0, 0, -1],
                                                      temperature=temperature, top_p=top_p,
                                                      top_k=0)))
    assert 0.5 * np.abs(drafter - exact[1]).sum() > 0.1


def test_stops_max_new_tokens_and_logprobs_of_a_forward_pass():
    params = bigram_drafter(models.init(CFG, jax.random.key(2)), residual_scale=0.05)
    prompt, pmask = left_padded_prompts(CFG, seed=1)
    stop = tuple(range(5, 40))  # frequent enough to end some rows early
    scfg = SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=4, stop_ids=stop,
                          draft="mtp")
    with jax.default_matmul_precision("highest"):
        out = sample(CFG, scfg, params, prompt, pmask, jax.random.key(3))
        logp = full_forward_logprobs(CFG, params, jnp.repeat(prompt, 4, 0),
                                     jnp.repeat(pmask, 4, 0), out["tokens"], out["mask"])
    chosen = jnp.take_along_axis(logp, out["tokens"][..., None], -1)[..., 0]
    m = np.asarray(out["mask"])
    np.testing.assert_allclose(np.asarray(out["logprobs"])[m], np.asarray(chosen)[m], atol=1e-5)
    toks, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
    assert toks.shape == (12, 12)
    for row in range(12):
        n = lengths[row]
        assert m[row, :n].all() and not m[row, n:].any() and (toks[row, n:] == 0).all()
        assert not np.isin(toks[row, :n - 1], stop).any()  # nothing generated past a stop
        if n < 12:
            assert toks[row, n - 1] in stop  # stopped right after a stop token
    assert (lengths < 12).any(), "no row stopped: the stop test tested nothing"
    assert (lengths == 12).any(), "every row stopped: max_new_tokens untested"
    assert int(out["drafts_accepted"].sum()) > 0


@pytest.mark.parametrize("cfg", [config.tiny(num_mtp_modules=0), qwen2.tiny()],
                         ids=["no_mtp", "dense_student"])
def test_refuses_configs_without_an_mtp_module(cfg):
    prompt, pmask = jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), bool)
    with pytest.raises(ValueError, match="num_mtp_modules >= 1.*draft='none'"):
        sample(cfg, SamplingConfig(draft="mtp"), {}, prompt, pmask, jax.random.key(0))


def test_unknown_draft_is_refused():
    with pytest.raises(ValueError, match="SamplingConfig.draft='eagle' must be one of"):
        SamplingConfig(draft="eagle")
