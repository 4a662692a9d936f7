"""R1-Zero in miniature: pretrain a tiny base on the embedded corpus, then pure GRPO with rule
rewards (accuracy + format), evaluating held-out pass@1 before and after.

One GRPO round: sample G completions per prompt on the latent cache -> rule rewards -> group
advantages -> reference logprobs -> mu x grpo_step. Everything is resumable from the workdir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from r1jax import data as rdata
from r1jax.eval.evaluate import EvalConfig, decode_completions, evaluate
from r1jax.rl import rewards
from r1jax.rl.grpo import dynamic_sampling_mask, group_advantages, overlong_penalty
from r1jax.rl.grpo_step import GRPOConfig, grpo_batch, grpo_step_fn, sequence_logprobs
from r1jax.rl.sampling import SamplingConfig, sample
from r1jax.train import loop
from r1jax.sharding import batch_sharding, make_mesh, replicated
from r1jax.train.checkpoint import Checkpointer, abstract_with_shardings, restore_params
from r1jax.train.experiment import ExperimentConfig
from r1jax.train.metrics_log import MetricsLog
from r1jax.train.optim import OptimConfig, learning_rate, make_optimizer
from r1jax.train.state import init_state, state_shardings

REWARDS = {"accuracy": rewards.accuracy_reward, "format": rewards.format_reward,
           "language": rewards.language_consistency_reward, "countdown": rewards.countdown_reward}


@dataclasses.dataclass(frozen=True)
class RLConfig:
    task: str = "arithmetic"
    task_kwargs: tuple = ()  # (knob, value) pairs, e.g. (("max_digits", 2),)
    steps: int = 60
    prompts_per_step: int = 8
    max_prompt_len: int = 48
    max_new_tokens: int = 48
    temperature: float = 1.0  # R1-Zero rollouts [Nature Methods]
    rewards: tuple = (("accuracy", 1.0), ("format", 1.0))  # equal weights, as R1
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        lr=3e-4, warmup_steps=5, schedule="constant", weight_decay=0.0))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    ckpt_every: int = 20
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class R1ZeroConfig:
    name: str = "r1_zero"
    pretrain: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)


def reward_fn(cfg: RLConfig):
    unknown = [name for name, _ in cfg.rewards if name not in REWARDS]
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; choose from {sorted(REWARDS)}")
    return rewards.combine_rewards([(REWARDS[name], w) for name, w in cfg.rewards])


def grpo_round(model_cfg, rl: RLConfig, tok, state, ref_params, prompts: dict, key, step_fn, score):
    """Sample, score and update once; returns (state, metrics)."""
    g = rl.grpo.group_size
    scfg = SamplingConfig(max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                          num_samples=g, stop_ids=(tok.eos_id,))
    out = sample(model_cfg, scfg, state.params, prompts["prompt_tokens"], prompts["prompt_mask"], key)
    host = jax.device_get(out)
    texts = decode_completions(tok, host["tokens"], host["lengths"])
    fields = {k: np.repeat(v, g) for k, v in prompts.items() if k not in
              ("prompt_tokens", "prompt_mask", "prompt_lengths")}
    reward = score([None] * len(texts), texts, **fields)  # (B*G,)
    if rl.grpo.overlong_cache_len:  # DAPO: shape the reward of responses near the length cap
        reward = reward + np.asarray(overlong_penalty(jnp.asarray(host["lengths"]), rl.max_new_tokens,
                                                      rl.grpo.overlong_cache_len))
    accuracy = rewards.accuracy_reward(None, texts, answer=fields["answer"])
    adv = group_advantages(jnp.asarray(reward), g, normalize_std=rl.grpo.normalize_std).reshape(-1)
    sampled = dict(out)
    if rl.grpo.dynamic_sampling:  # DAPO: groups with equal rewards carry no signal
        keep = dynamic_sampling_mask(jnp.asarray(reward), g).reshape(-1)
        sampled["mask"] = out["mask"] & keep[:, None]
    batch = grpo_batch(jnp.repeat(prompts["prompt_tokens"], g, 0),
                       jnp.repeat(prompts["prompt_mask"], g, 0), sampled, adv)
    batch["ref_logp"] = sequence_logprobs(model_cfg, ref_params, batch)
    for _ in range(rl.grpo.inner_updates):
        state, m = step_fn(state, batch)
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    m.update(reward=float(reward.mean()), accuracy=float(accuracy.mean()),
             response_length=float(host["lengths"].mean()))
    return state, m, texts


def run(cfg: R1ZeroConfig, workdir: str) -> dict:
    """Pretrain (or resume), evaluate, GRPO (or resume), evaluate; write tables and plots."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2, default=str)
    rl, model_cfg = cfg.rl, cfg.pretrain.model

    # --- Stage 0: the base model
    pre_dir = os.path.join(workdir, "pretrain")
    loop.run(cfg.pretrain, pre_dir)
    tok = rdata.load_or_train_tokenizer(pre_dir, vocab_size=cfg.pretrain.data.vocab_size,
                                        seed=cfg.pretrain.data.seed)

    # --- State: GRPO resumes from its own checkpoints, else starts from the base params
    tx = make_optimizer(rl.optim, rl.steps)
    lr = learning_rate(rl.optim, rl.steps)
    mesh = make_mesh(cfg.pretrain.mesh)
    shardings, abstract = state_shardings(model_cfg, tx, mesh)
    abstract = abstract_with_shardings(abstract, shardings)
    base = restore_params(os.path.join(pre_dir, "checkpoints"), abstract.params)
    ckpt = Checkpointer(os.path.join(workdir, "grpo"), save_every=rl.ckpt_every, keep=2)
    restored = ckpt.restore({"train": abstract, "ref": abstract.params})
    prompts_ds = rdata.rl_prompt_batches(rdata.task_dataset(rl.task, seed=rl.seed, **dict(rl.task_kwargs)), tok,
                                         max_prompt_len=rl.max_prompt_len,
                                         batch_size=rl.prompts_per_step, seed=rl.seed)
    prompt_iter = iter(prompts_ds)
    if restored is None:
        init = jax.jit(lambda k: init_state(model_cfg, tx, k), out_shardings=shardings)
        state = init(jax.random.key(rl.seed)).replace(params=base)
        ref_params = jax.tree.map(jnp.copy, base)  # the step donates the policy's buffers
    else:
        both, data_state = restored
        state, ref_params = both["train"], both["ref"]
        prompt_iter.set_state(data_state)

    # --- Evaluate the base
    problems = rdata.heldout_problems(rl.task, num_problems=rl.eval.num_problems,
                                      **dict(rl.task_kwargs))
    results_path = os.path.join(workdir, "eval.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    if "base" not in results:
        results["base"] = evaluate(model_cfg, base, tok, problems, rl.eval, max_prompt_len=rl.max_prompt_len)
        json.dump(results, open(results_path, "w"), indent=2)

    # --- GRPO
    # Explicit shardings keep one compiled step for every round (inputs never change placement).
    step_fn = jax.jit(grpo_step_fn(model_cfg, tx, rl.grpo, bias_update_speed=0.0, lr_schedule=lr),
                      in_shardings=(shardings, batch_sharding(mesh)),
                      out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    score = reward_fn(rl)
    log = MetricsLog(os.path.join(workdir))
    start = int(state.step) // rl.grpo.inner_updates
    key = jax.random.key(rl.seed + 1)
    for step in tqdm(range(start, rl.steps), initial=start, total=rl.steps, desc="grpo",
                     dynamic_ncols=True):
        t0 = time.perf_counter()
        prompts = next(prompt_iter)
        state, m, texts = grpo_round(model_cfg, rl, tok, state, ref_params, prompts,
                                     jax.random.fold_in(key, step), step_fn, score)
        done = step + 1
        if rl.grpo.ref_update_every and done % rl.grpo.ref_update_every == 0:
            ref_params = jax.tree.map(jnp.copy, state.params)  # R1-Zero: pi_ref <- latest policy
        m.update(step=done, seconds=time.perf_counter() - t0, sample=texts[0][:200])
        log.write(m)
        ckpt.save(done, {"train": state, "ref": ref_params}, prompt_iter.get_state(),
                  force=done == rl.steps)
    ckpt.close()
    log.close()

    # --- Evaluate the policy
    if "r1_zero" not in results or results.get("r1_zero_step") != rl.steps:
        results["r1_zero"] = evaluate(model_cfg, state.params, tok, problems, rl.eval,
                                      max_prompt_len=rl.max_prompt_len)
        results["r1_zero_step"] = rl.steps
        json.dump(results, open(results_path, "w"), indent=2)
    return results
