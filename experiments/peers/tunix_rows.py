"""r1jax against Tunix on the same Qwen2 small weights: greedy generation, a T=1 rollout and one
GRPO iteration. Each function returns one row of experiments/bench_peers.py.

Settings that differ between the two GRPO steps (the work per step is the same: a rollout, the
reference model's log-probs, one forward + backward + AdamW update of the policy):
- pi_old: r1jax takes the sampler's log-probs; Tunix, with one policy update per rollout
  (num_iterations=1), takes stop_gradient of the current log-probs (ratio exactly 1).
- Tunix's loss also computes the entropy of every position's logits (for its metrics).
- The rollout's random streams differ, so the sampled completions (and losses) differ.
"""

from __future__ import annotations

import functools
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from experiments.peers import tunix_side
from experiments.peers.common import (Shapes, even_token_share, interleaved, qwen2_small,
                                      random_prompts)
from r1jax import models
from r1jax.interop import hf
from r1jax.rl.grpo import group_advantages
from r1jax.rl.grpo_step import GRPOConfig, grpo_batch, grpo_step_fn, sequence_logprobs
from r1jax.rollout import Rollout, SamplingConfig, sample
from r1jax.sharding import MeshConfig, make_mesh
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.state import create_sharded_state

# One GRPO update's settings on both sides: R1-Zero's KL weight, GRPO's clip, AdamW at a constant
# learning rate.
OPTIM = OptimConfig(lr=1e-5, warmup_steps=0, schedule="constant")
KL_BETA, CLIP_EPS = 0.001, 0.2


def _tunix_model(cfg, params):
    """Tunix's Qwen2 of r1jax's params (through a safetensors directory), and the largest logit
    difference on one batch."""
    with tempfile.TemporaryDirectory() as d:
        hf.save_checkpoint(cfg, params, d)
        model = tunix_side.load_qwen2(d, cfg)
    tokens = random_prompts(cfg.vocab_size, 2, 24, seed=1)
    ours = np.asarray(models.forward(cfg, params, jnp.asarray(tokens), with_mtp=False)[0])
    return model, float(np.max(np.abs(ours - tunix_side.forward_logits(model, tokens))))


def greedy_generation(shapes: Shapes, repeats: int) -> dict:
    """r1jax's sampling engine vs Tunix's Sampler, greedy, every row running all new tokens."""
    cfg = qwen2_small()
    params = models.init(cfg, jax.random.key(0))
    prompt = random_prompts(cfg.vocab_size, shapes.gen_rows, shapes.gen_prompt)
    mask = np.ones_like(prompt, dtype=bool)
    scfg = SamplingConfig(max_new_tokens=shapes.gen_new, greedy=True)
    model, diff = _tunix_model(cfg, params)
    generator = tunix_side.Generator(model, cfg, shapes.gen_prompt, shapes.gen_new)
    out = {}

    def ours():
        out["ours"] = sample(cfg, scfg, params, prompt, mask, jax.random.key(0))["tokens"]
        jax.block_until_ready(out["ours"])

    def peer():
        out["peer"] = generator(prompt)

    first, ours_s, peer_s = interleaved(ours, peer, repeats)
    return {"first_s": first, "ours_s": ours_s, "peer_s": peer_s, "max_logit_diff": diff,
            "same_tokens": bool(np.array_equal(np.asarray(out["ours"]), out["peer"]))}


def rollout(shapes: Shapes, repeats: int) -> dict:
    """A GRPO rollout at T=1, top-p 1: prompts x samples rows (the sampler Tunix's GRPO learner
    runs with its "vanilla" rollout engine)."""
    cfg = qwen2_small()
    params = models.init(cfg, jax.random.key(0))
    prompt = random_prompts(cfg.vocab_size, shapes.grpo_prompts, shapes.grpo_prompt)
    mask = np.ones_like(prompt, dtype=bool)
    scfg = SamplingConfig(max_new_tokens=shapes.rollout_new, temperature=1.0,
                          num_samples=shapes.grpo_samples)
    model, _ = _tunix_model(cfg, params)
    generator = tunix_side.Generator(model, cfg, shapes.grpo_prompt, shapes.rollout_new)
    repeated = np.repeat(prompt, shapes.grpo_samples, axis=0)  # Tunix takes each row as a prompt

    def ours():
        jax.block_until_ready(sample(cfg, scfg, params, prompt, mask, jax.random.key(1))["tokens"])

    def peer():
        generator(repeated, temperature=1.0, seed=1)

    first, ours_s, peer_s = interleaved(ours, peer, repeats)
    return {"first_s": first, "ours_s": ours_s, "peer_s": peer_s}


def grpo_step(shapes: Shapes, repeats: int) -> dict:
    """One GRPO iteration: rollout -> reward (share of even ids) -> group advantages ->
    reference log-probs -> one policy update; r1jax's grpo_step vs Tunix's GRPOLearner."""
    cfg, g = qwen2_small(), shapes.grpo_samples
    tx = make_optimizer(OPTIM, 1000, models.param_roles(cfg))
    mesh = make_mesh(MeshConfig())
    with jax.set_mesh(mesh):
        state, _ = create_sharded_state(cfg, tx, mesh, jax.random.key(0))
    reference = jax.tree.map(jnp.copy, state.params)  # the step donates the policy's buffers
    with tempfile.TemporaryDirectory() as d:
        hf.save_checkpoint(cfg, state.params, d)
        peer_run = tunix_side.GRPORun(
            d, cfg, prompts=shapes.grpo_prompts, samples=g, prompt_len=shapes.grpo_prompt,
            new_tokens=shapes.grpo_new, kl_beta=KL_BETA, clip_eps=CLIP_EPS,
            optimizer=tunix_side.tunix_optimizer(OPTIM.lr, OPTIM.weight_decay, OPTIM.grad_clip,
                                                 OPTIM.b2))
    prompt = random_prompts(cfg.vocab_size, shapes.grpo_prompts, shapes.grpo_prompt)
    mask = np.ones_like(prompt, dtype=bool)
    scfg = SamplingConfig(max_new_tokens=shapes.grpo_new, temperature=1.0, num_samples=g)
    step = jax.jit(grpo_step_fn(cfg, tx, GRPOConfig(group_size=g, kl_beta=KL_BETA,
                                                    clip_eps=CLIP_EPS)), donate_argnums=0)
    reference_logprobs = jax.jit(functools.partial(sequence_logprobs, cfg))
    holder = {"state": state, "calls": 0}

    def ours():
        key = jax.random.fold_in(jax.random.key(1), holder["calls"])
        holder["calls"] += 1
        out = jax.device_get(sample(cfg, scfg, holder["state"].params, prompt, mask, key))
        rows = Rollout(prompt_tokens=np.repeat(prompt, g, 0), prompt_mask=np.repeat(mask, g, 0),
                       tokens=out["tokens"], logprobs=out["logprobs"], mask=out["mask"],
                       lengths=out["lengths"], texts=[], examples=[], group_size=g)
        advantages = group_advantages(jnp.asarray(even_token_share(out["tokens"])), g)
        batch = grpo_batch(rows, np.asarray(advantages))
        batch["ref_logp"] = reference_logprobs(reference, batch)
        holder["state"], metrics = step(holder["state"], batch)
        float(metrics["loss"])

    def peer():
        peer_run.step(prompt)

    first, ours_s, peer_s = interleaved(ours, peer, repeats)
    return {"first_s": first, "ours_s": ours_s, "peer_s": peer_s}


def rows(shapes: Shapes, repeats: int) -> list[tuple[str, str, object]]:
    """(work, peer, measure) of every Tunix row."""
    s = shapes
    return [
        (f"Qwen2 small greedy generation {s.gen_rows} x ({s.gen_prompt} + {s.gen_new})",
         "Tunix Sampler", lambda: greedy_generation(shapes, repeats)),
        (f"Qwen2 small rollout {s.grpo_prompts}x{s.grpo_samples} x ({s.grpo_prompt} + "
         f"{s.rollout_new}), T=1", "Tunix Sampler", lambda: rollout(shapes, repeats)),
        (f"Qwen2 small GRPO step {s.grpo_prompts}x{s.grpo_samples} x ({s.grpo_prompt} + "
         f"{s.grpo_new})", "Tunix GRPOLearner", lambda: grpo_step(shapes, repeats)),
    ]
