"""`grpo_step(state, batch) -> (state, metrics)`: the GRPO loss plugged into the shared step.

The batch is built on the host from a rollout (`grpo_batch`): prompt + completion as one
sequence, the completion tokens as the loss mask, the behaviour logprobs (pi_old, from the
sampler) and one advantage per sequence; the reference logprobs (pi_ref, `sequence_logprobs` with
frozen params) are added on the device.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from r1jax import models
from r1jax.config import ModelConfig
from r1jax.field_checks import at_least, check_fields, one_of, optional, positive
from r1jax.nn.logprobs import token_logprobs
from r1jax.rl.grpo import aggregation_normalizer, grpo_loss
from r1jax.rollout import Rollout
from r1jax.train.steps import make_step, step_aux


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    group_size: int = 8  # G samples per prompt
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # DAPO clip-higher: 0.28 with clip_eps 0.2
    kl_beta: float = 0.001  # R1-Zero [Nature Methods]
    aggregation: str = "grpo"  # grpo | token (DAPO) | dr_grpo
    max_len_normalizer: int | None = None  # dr_grpo constant; default: max new tokens
    normalize_std: bool = True  # False = Dr. GRPO advantages r - mean
    inner_updates: int = 1  # mu: policy updates per sampling round, reusing pi_old
    ref_update_every: int = 0  # replace pi_ref by the policy every N steps (R1-Zero: 400); 0 = never
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    overlong_cache_len: int = 0  # DAPO soft overlong punishment over the last N tokens; 0 = off

    def __post_init__(self):
        check_fields(self, group_size=at_least(2), clip_eps=positive(),
                     clip_eps_high=optional(positive()), kl_beta=at_least(0),
                     aggregation=one_of("grpo", "token", "dr_grpo"),
                     max_len_normalizer=optional(at_least(1)), inner_updates=at_least(1),
                     ref_update_every=at_least(0), overlong_cache_len=at_least(0))


def grpo_batch(rollout: Rollout, advantages: np.ndarray, completion_mask: np.ndarray | None = None
               ) -> dict:
    """One host sequence per sample: [prompt (P) | completion (N)], shifted for next-token
    logprobs. `completion_mask` (R, N) narrows the loss to fewer completion tokens (default: the
    rollout's generated tokens; DAPO's dynamic sampling zeroes whole groups).

    Returns inputs/targets/attention_mask/positions/loss_mask/old_logp (R, P+N-1) and
    advantages (R,), numpy.
    """
    generated = rollout.mask if completion_mask is None else completion_mask
    seq = np.concatenate([rollout.prompt_tokens, rollout.tokens], axis=1)  # (R, P+N)
    valid = np.concatenate([rollout.prompt_mask, rollout.mask], axis=1)
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0)
    rows, p = rollout.prompt_tokens.shape
    # Target j is token j+1: the generated token i sits at target index P-1+i.
    zeros = np.zeros((rows, p - 1))
    return {"inputs": seq[:, :-1].astype(np.int32), "targets": seq[:, 1:].astype(np.int32),
            "attention_mask": valid[:, :-1], "positions": positions[:, :-1].astype(np.int32),
            "loss_mask": np.concatenate([zeros.astype(bool), generated], axis=1),
            "old_logp": np.concatenate([zeros, rollout.logprobs], axis=1).astype(np.float32),
            "advantages": np.asarray(advantages, np.float32)}


def _logprobs(cfg: ModelConfig, params, batch):
    logits, aux = models.forward(cfg, params, batch["inputs"], positions=batch["positions"],
                                 attention_mask=batch["attention_mask"], with_mtp=False)
    return token_logprobs(logits, batch["targets"]), aux


def sequence_logprobs(cfg: ModelConfig, params, batch) -> jax.Array:
    """log pi(target) per position (R, T) for a grpo_batch: the reference policy's logprobs
    (jit it with the batch's sharding as out_shardings, as the GRPO stage does)."""
    return _logprobs(cfg, params, batch)[0]


def grpo_step_fn(model_cfg: ModelConfig, tx, gcfg: GRPOConfig, *, grad_accum: int = 1,
                 bias_update_speed: float = 0.0, lr_schedule=None):
    """Pure `grpo_step(state, batch)`: `gcfg.inner_updates` (mu) policy updates on one batch from
    `grpo_batch` plus `ref_logp`; metrics of the last update."""

    def norms_fn(batch):
        return {"normalizer": aggregation_normalizer(batch["loss_mask"], gcfg.aggregation,
                                                     gcfg.max_len_normalizer)}

    def loss_fn(params, batch, norms):
        logp, aux = _logprobs(model_cfg, params, batch)
        loss, metrics = grpo_loss(
            logp, batch["old_logp"], batch["ref_logp"], batch["advantages"], batch["loss_mask"],
            clip_eps=gcfg.clip_eps, clip_eps_high=gcfg.clip_eps_high, kl_beta=gcfg.kl_beta,
            aggregation=gcfg.aggregation, max_len_normalizer=gcfg.max_len_normalizer,
            normalizer=norms["normalizer"])
        loss = loss + aux["balance_loss"] / grad_accum
        # Microbatch metrics are summed by the step: pre-divide the means.
        metrics = {k: (v if k in ("loss", "num_tokens") else v / grad_accum) for k, v in metrics.items()
                   if k != "ratio_max"}
        metrics["loss"] = loss
        return loss, step_aux(aux, metrics)

    update = make_step(model_cfg, tx, loss_fn, norms_fn, grad_accum=grad_accum,
                       bias_update_speed=bias_update_speed, lr_schedule=lr_schedule)
    if gcfg.inner_updates == 1:
        return update

    def grpo_step(state, batch):
        # mu updates on one sampled batch, each against the same pi_old (the sampler's logprobs):
        # the clipped ratio is what keeps them close [GRPO, S8 §4.1.1].
        state, metrics = jax.lax.scan(lambda s, _: update(s, batch), state,
                                      length=gcfg.inner_updates)
        last = jax.tree.map(lambda m: m[-1], metrics)  # the last update's metrics
        last["nonfinite"] = metrics["nonfinite"].max()  # any update that was not applied
        return state, last

    return grpo_step
