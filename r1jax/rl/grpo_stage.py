"""A GRPO stage on the training loop: the batch source is rollouts of the policy being trained.

One step: a batch of prompts -> G completions each on the latent cache (`r1jax.rollout`) ->
rewards from the task's verifier and the named rule rewards -> group advantages -> reference
log-probs -> mu x grpo_step. R1-Zero is one such stage on the base; the R1 recipe runs two more
and the distillation comparison one on the dense student (r1jax/recipe/). The loop checkpoints
the policy, the optimizer, the reference policy and the prompt iterator, and resumes all four.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import data as rdata
from r1jax import models
from r1jax.field_checks import at_least, between, check_fields, one_of, positive
from r1jax.interop import hf
from r1jax.rl.grpo import dynamic_sampling_mask, group_advantages, overlong_penalty
from r1jax.rl.grpo_step import GRPOConfig, grpo_batch, grpo_step_fn, sequence_logprobs
from r1jax.rollout import DRAFTS, SamplingConfig, check_rewards, generate, score
from r1jax.sharding import MeshConfig, batch_sharding, batch_shards, global_array, make_mesh
from r1jax.train import loop
from r1jax.train.experiment import TrainConfig, to_dict
from r1jax.train.hf_start import start_from_hf
from r1jax.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """A GRPO run: prompts of `task`, G = grpo.group_size samples each, rewards weighted by name
    (r1jax/rollout/scoring.py: accuracy, format, language). `train.init_from` (the checkpoint
    directory of the policy to start from) is required."""

    task: str = "arithmetic"  # a generated task, or a data file / save_to_disk dir (math task)
    task_kwargs: tuple = ()  # (knob, value) pairs, e.g. (("max_digits", 2),)
    # A data file's fields when its layout is not recognised by their names (r1jax/data/layouts.py).
    fields: rdata.FieldMap = dataclasses.field(default_factory=rdata.FieldMap)
    prompts_per_step: int = 8
    max_prompt_len: int = 48
    max_new_tokens: int = 48
    temperature: float = 1.0  # R1-Zero rollouts [Nature Methods]; R1's final stage uses 0.7
    top_p: float = 1.0
    # "mtp": decode speculatively, the model's MTP module drafting (a DeepSeek-V3 config with MTP
    # modules; r1jax/rollout/speculative.py): the same distribution, fewer main-model steps.
    draft: str = "none"
    rewards: tuple = (("accuracy", 1.0), ("format", 1.0))  # equal weights, as R1
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    # 3e-5 for the tiny recipes: 3e-4 collapsed the policy (KL to the reference ~0.9/token) and
    # 1e-4 gained half as much (configs/r1_pipeline_tiny.py). R1-Zero itself used 3e-6 [S7].
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        lr=3e-5, warmup_steps=5, schedule="constant", weight_decay=0.0))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        steps=60, log_every=1, ckpt_every=20))
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    prompt_seed: int = 0  # order of the training prompts
    sampling_seed: int = 1  # the rollouts' random stream (step s samples with fold_in(key, s))
    # A Hugging Face checkpoint directory to start the policy from (its model, params and
    # tokenizer) instead of `train.init_from` (r1jax/train/hf_start.py).
    hf_checkpoint: str = ""

    def __post_init__(self):
        check_fields(self, prompts_per_step=at_least(1), max_prompt_len=at_least(1),
                     max_new_tokens=at_least(1), temperature=positive(),
                     top_p=between(0, 1, include_low=False), draft=one_of(*DRAFTS))
        if not self.rewards:
            raise ValueError("RLConfig.rewards is empty: name at least one (reward, weight) pair")
        check_rewards(self.rewards)


def check_rl_config(rl: RLConfig, mesh) -> None:
    """Clear errors before anything is compiled."""
    check_rewards(rl.rewards)
    rows = rl.prompts_per_step * rl.grpo.group_size
    shards = batch_shards(mesh)
    if rows % (shards * rl.train.grad_accum):
        raise ValueError(f"prompts_per_step * grpo.group_size = {rows} rows must be divisible by "
                         f"the batch shards ({shards}, mesh {dict(mesh.shape)}) times "
                         f"train.grad_accum={rl.train.grad_accum}")
    if not rl.train.init_from:
        raise ValueError("a GRPO stage starts from a trained policy: set train.init_from to its "
                         "checkpoint directory")


class RolloutBatches(loop.BatchSource):
    """GRPO's batch source: every batch is a fresh, scored rollout of the current policy."""

    def __init__(self, model_cfg, rl: RLConfig, tok):
        if rl.draft != "none":
            models.check_has_mtp(model_cfg)  # before anything is compiled
        self.model_cfg, self.rl, self.tok = model_cfg, rl, tok
        examples = rdata.examples_of(rl.task, seed=rl.prompt_seed, fields=rl.fields,
                                     **dict(rl.task_kwargs))
        self.prompts = iter(rdata.rl_prompt_batches(
            examples, tok, max_prompt_len=rl.max_prompt_len, batch_size=rl.prompts_per_step,
            seed=rl.prompt_seed))
        self.sampling = SamplingConfig(max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                                       top_p=rl.top_p, num_samples=rl.grpo.group_size,
                                       draft=rl.draft)
        self.key = jax.random.key(rl.sampling_seed)
        self.steps_done = 0
        self.ref = None  # the reference policy pi_ref: restored, or a copy of the initial policy

    # --- checkpointed state
    def get_state(self) -> dict:
        return {"prompts": self.prompts.get_state(), "steps_done": self.steps_done}

    def set_state(self, data_state: dict) -> None:
        self.prompts.set_state(data_state["prompts"])
        self.steps_done = data_state["steps_done"]

    def abstract_extra(self, abstract_params) -> dict:
        return {"ref": abstract_params}

    def extra_arrays(self) -> dict:
        return {"ref": self.ref}

    def restore_extra(self, arrays: dict) -> None:
        self.ref = arrays["ref"]

    # --- batches
    def start(self, mesh, state) -> None:
        self.mesh, self.sharding = mesh, batch_sharding(mesh)
        if self.ref is None:
            self.ref = jax.tree.map(jnp.copy, state.params)  # the step donates the policy's buffers
        self.ref_logprobs = jax.jit(functools.partial(sequence_logprobs, self.model_cfg),
                                    out_shardings=self.sharding)

    def next(self, state) -> tuple[dict, dict]:
        rl, g = self.rl, self.rl.grpo.group_size
        rollout = generate(self.model_cfg, state.params, self.tok, next(self.prompts), self.sampling,
                           jax.random.fold_in(self.key, self.steps_done), mesh=self.mesh)
        scores = score(rollout.texts, rollout.examples, rl.rewards)
        reward = scores.reward
        if rl.grpo.overlong_cache_len:  # DAPO: shape the reward of responses near the length cap
            reward = reward + np.asarray(overlong_penalty(
                jnp.asarray(rollout.lengths), rl.max_new_tokens, rl.grpo.overlong_cache_len))
        advantages = np.asarray(group_advantages(jnp.asarray(reward), g,
                                                 normalize_std=rl.grpo.normalize_std))
        completion_mask = rollout.mask
        if rl.grpo.dynamic_sampling:  # DAPO: groups with equal rewards carry no signal
            keep = np.asarray(dynamic_sampling_mask(jnp.asarray(reward), g))
            completion_mask = rollout.mask & keep[:, None]
        host = grpo_batch(rollout, advantages, completion_mask)
        batch = {k: global_array(v, self.sharding) for k, v in host.items()}
        batch["ref_logp"] = self.ref_logprobs(self.ref, batch)
        metrics = {"reward": float(reward.mean()), "accuracy": float(scores.correct.mean()),
                   "response_length": float(rollout.lengths.mean()),
                   "verifier_errors": int(scores.errors.sum()),  # completions scored 0 on a fault
                   **{f"reward_{name}": float(part.mean()) for name, part in scores.parts.items()},
                   "sample": rollout.texts[0][:200]}
        if scores.revised is not None:  # % of responses that check and revise an earlier step
            metrics["revisions"] = 100 * float(scores.revised.mean())
        return batch, metrics

    def after_step(self, state, step: int) -> None:
        self.steps_done = step
        every = self.rl.grpo.ref_update_every
        if every and step % every == 0:  # R1-Zero: pi_ref <- the latest policy
            self.ref = jax.tree.map(jnp.copy, state.params)


def run(model_cfg, rl: RLConfig, tok, workdir: str, *, name: str = "grpo") -> list[dict]:
    """GRPO from the params of checkpoint directory `rl.train.init_from`; checkpoints and
    metrics.jsonl go to `workdir`. Returns the metrics logged by this run. With
    `rl.hf_checkpoint`, model_cfg and tok may be None: they are the checkpoint's."""
    if rl.hf_checkpoint:
        rl = start_from_hf(rl)
        model_cfg = model_cfg or hf.read_model_config(rl.hf_checkpoint)
        tok = tok or rdata.load_tokenizer(rl.hf_checkpoint)
    check_rl_config(rl, make_mesh(rl.mesh))

    def make_step(tx, lr):
        return grpo_step_fn(model_cfg, tx, rl.grpo, grad_accum=rl.train.grad_accum,
                            bias_update_speed=rl.train.bias_update_speed, lr_schedule=lr)

    # A resume may not change the policy's model or the prompts it trains on (r1jax/train/workdir.py).
    pinned = ("model", "task", "task_kwargs", "prompt_seed", "prompts_per_step", "max_prompt_len",
              "grpo.group_size")
    return loop.run(workdir, name=name, model_cfg=model_cfg, mesh_cfg=rl.mesh, optim=rl.optim,
                    train=rl.train, make_step=make_step, source=RolloutBatches(model_cfg, rl, tok),
                    record={**to_dict(rl), "model": to_dict(model_cfg)}, pinned=pinned)
