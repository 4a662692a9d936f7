"""A GRPO stage: start from a checkpoint's params, run `steps` sampling rounds, checkpoint.

One GRPO round: sample G completions per prompt on the latent cache -> rule rewards -> group
advantages -> reference logprobs -> mu x grpo_step. R1-Zero runs one such stage on the base;
the R1 recipe runs two (reasoning RL after the cold start, all-scenario RL after rejection
sampling), and the distillation comparison runs one on the dense student. Everything resumes
from `workdir`: the policy, the reference, the optimizer and the prompt iterator.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from r1jax import data as rdata
from r1jax.eval.evaluate import EvalConfig, decode_completions
from r1jax.rl import rewards
from r1jax.rl.grpo import dynamic_sampling_mask, group_advantages, overlong_penalty
from r1jax.rl.grpo_step import GRPOConfig, grpo_batch, grpo_step_fn, sequence_logprobs
from r1jax.rl.sampling import SamplingConfig, sample
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh, replicated
from r1jax.train.checkpoint import Checkpointer, abstract_with_shardings, restore_params
from r1jax.train.metrics_log import MetricsLog
from r1jax.train.optim import OptimConfig, learning_rate, make_optimizer
from r1jax.train.state import init_state, state_shardings

REWARDS = {"accuracy": rewards.accuracy_reward, "format": rewards.format_reward,
           "language": rewards.language_consistency_reward, "countdown": rewards.countdown_reward}
# Where a GRPO checkpoint ({"train": TrainState, "ref": params}) keeps the policy's params.
POLICY_PATH = ("train", "params")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    task: str = "arithmetic"
    task_kwargs: tuple = ()  # (knob, value) pairs, e.g. (("max_digits", 2),)
    steps: int = 60
    prompts_per_step: int = 8
    max_prompt_len: int = 48
    max_new_tokens: int = 48
    temperature: float = 1.0  # R1-Zero rollouts [Nature Methods]; R1's final stage uses 0.7
    rewards: tuple = (("accuracy", 1.0), ("format", 1.0))  # equal weights, as R1
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        lr=3e-4, warmup_steps=5, schedule="constant", weight_decay=0.0))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    ckpt_every: int = 20
    seed: int = 0


def reward_fn(cfg: RLConfig):
    unknown = [name for name, _ in cfg.rewards if name not in REWARDS]
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; choose from {sorted(REWARDS)}")
    return rewards.combine_rewards([(REWARDS[name], w) for name, w in cfg.rewards])


def grpo_round(model_cfg, rl: RLConfig, tok, state, ref_params, prompts: dict, key, step_fn, score):
    """Sample, score and update once; returns (state, metrics, completion texts)."""
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


def run_grpo(model_cfg, rl: RLConfig, tok, init_from: str, workdir: str, *,
             init_path: tuple[str, ...] = ("params",), mesh: MeshConfig = MeshConfig(),
             log_dir: str | None = None):
    """GRPO from the params in checkpoint directory `init_from` (at `init_path` in its state);
    returns the final policy params. Checkpoints go to `workdir` (policy, reference, optimizer,
    prompt iterator), metrics.jsonl to `log_dir` (default: workdir)."""
    tx = make_optimizer(rl.optim, rl.steps)
    lr = learning_rate(rl.optim, rl.steps)
    mesh = make_mesh(mesh)
    shardings, abstract = state_shardings(model_cfg, tx, mesh)
    abstract = abstract_with_shardings(abstract, shardings)
    ckpt = Checkpointer(workdir, save_every=rl.ckpt_every, keep=2)
    restored = ckpt.restore({"train": abstract, "ref": abstract.params})
    prompt_iter = iter(rdata.rl_prompt_batches(
        rdata.task_dataset(rl.task, seed=rl.seed, **dict(rl.task_kwargs)), tok,
        max_prompt_len=rl.max_prompt_len, batch_size=rl.prompts_per_step, seed=rl.seed))
    if restored is None:
        base = restore_params(init_from, abstract.params, path=init_path)
        init = jax.jit(lambda k: init_state(model_cfg, tx, k), out_shardings=shardings)
        state = init(jax.random.key(rl.seed)).replace(params=base)
        ref_params = jax.tree.map(jnp.copy, base)  # the step donates the policy's buffers
    else:
        both, data_state = restored
        state, ref_params = both["train"], both["ref"]
        prompt_iter.set_state(data_state)

    # Explicit shardings keep one compiled step for every round (inputs never change placement).
    step_fn = jax.jit(grpo_step_fn(model_cfg, tx, rl.grpo, bias_update_speed=0.0, lr_schedule=lr),
                      in_shardings=(shardings, batch_sharding(mesh)),
                      out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    score = reward_fn(rl)
    log = MetricsLog(log_dir or workdir)
    start = int(state.step) // rl.grpo.inner_updates
    key = jax.random.key(rl.seed + 1)
    name = os.path.basename(os.path.normpath(log_dir or workdir))
    for step in tqdm(range(start, rl.steps), initial=start, total=rl.steps, desc=name,
                     dynamic_ncols=True):
        t0 = time.perf_counter()
        state, m, texts = grpo_round(model_cfg, rl, tok, state, ref_params, next(prompt_iter),
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
    return state.params
