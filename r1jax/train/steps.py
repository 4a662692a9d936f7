"""Pure train steps: `(state, batch) -> (state, metrics)`.

`make_step(loss_fn, ...)` owns everything a step does besides the loss: gradient accumulation,
the optimizer update, the aux-loss-free routing-bias rule and the common metrics. SFT and
pretraining use `lm_loss`; GRPO and distillation plug in their own loss functions. The steps know
no param names: the architecture supplies its MTP depth and its bias rule (`r1jax.models`).

A loss function is `loss_fn(params, microbatch, norms) -> (loss, aux)`; `norms` are batch-wide
normalisers computed from the whole batch before splitting it into microbatches, so that the sum
of microbatch gradients equals the full-batch gradient exactly. aux must hold `expert_load`
(L_moe, E), `mtp_expert_load` (D, E) and `metrics` (dict of scalars summed over microbatches).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from r1jax import models
from r1jax.nn.logprobs import token_logprobs
from r1jax.train.state import TrainState


def mtp_targets(targets, loss_mask, segment_ids, depth: int):
    """Depth-k MTP at position i predicts token i+k+1 = targets[i+k] [V3 eq. 24]; valid while
    i+k is inside the row and the same packed document."""
    t = targets.shape[1]
    shift = lambda x: jnp.pad(x[:, depth:], ((0, 0), (0, depth)))  # noqa: E731
    mask = shift(loss_mask.astype(jnp.float32))
    if segment_ids is not None:
        mask = mask * (shift(segment_ids) == segment_ids)
    return shift(targets), mask * (jnp.arange(t) < t - depth)


def lm_norms(batch: dict, model_cfg) -> dict:
    """Token counts of the whole batch: the denominators of the NLL and of each MTP depth."""
    seg = batch.get("segment_ids")
    depth = models.mtp_depth(model_cfg)
    norms = {"n_tokens": jnp.maximum(batch["loss_mask"].astype(jnp.float32).sum(), 1.0)}
    norms["n_mtp"] = jnp.stack([
        jnp.maximum(mtp_targets(batch["targets"], batch["loss_mask"], seg, k)[1].sum(), 1.0)
        for k in range(1, depth + 1)]) if depth else jnp.ones((0,))
    return norms


def lm_loss(model_cfg, *, mtp_weight: float, n_micro: int = 1):
    """Next-token NLL over loss_mask + (lambda/D) * sum_k L_MTP^k + sequence balance loss."""

    def loss_fn(params, batch, norms):
        seg = batch.get("segment_ids")
        logits, aux = models.forward(model_cfg, params, batch["inputs"],
                                     positions=batch.get("positions"),
                                     attention_mask=None if seg is None else seg > 0,
                                     segment_ids=seg)
        mask = batch["loss_mask"].astype(jnp.float32)
        nll_sum = -jnp.sum(token_logprobs(logits, batch["targets"]) * mask)
        loss = nll_sum / norms["n_tokens"] + aux["balance_loss"] / n_micro
        metrics = {"nll": nll_sum / norms["n_tokens"], "balance_loss": aux["balance_loss"] / n_micro}
        d = models.mtp_depth(model_cfg)
        if d:
            mtp = jnp.zeros(())
            for k in range(1, d + 1):
                tgt, m = mtp_targets(batch["targets"], batch["loss_mask"], seg, k)
                mtp += -jnp.sum(token_logprobs(aux["mtp_logits"][k - 1], tgt) * m) / norms["n_mtp"][k - 1]
            loss += mtp_weight / d * mtp
            metrics["mtp_loss"] = mtp / d
        metrics["loss"] = loss
        return loss, step_aux(aux, metrics)

    return loss_fn


def step_aux(model_aux: dict, metrics: dict) -> dict:
    """What a loss function hands `make_step` besides the loss: the expert loads of the forward
    pass (for the bias rule) and the metrics."""
    return {"expert_load": model_aux["expert_load"], "mtp_expert_load": model_aux["mtp_expert_load"],
            "metrics": metrics}


def make_step(model_cfg, tx: optax.GradientTransformation, loss_fn: Callable,
              norms_fn: Callable, *, grad_accum: int = 1, bias_update_speed: float = 0.0,
              lr_schedule: Callable | None = None):
    """Build `step(state, batch) -> (state, metrics)`; jit it with shardings and donation.

    When the loss or the gradient norm is not finite the returned state is the input state
    (nothing applied, step not counted) and metrics["nonfinite"] is 1."""

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict):
        norms = norms_fn(batch)
        if grad_accum == 1:
            (_, aux), grads = grad_fn(state.params, batch, norms)
        else:
            def split(x):
                if x.shape[0] % grad_accum:
                    raise ValueError(f"batch {x.shape[0]} is not divisible by grad_accum={grad_accum}")
                return x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:])

            def body(carry, micro):
                (_, aux), g = grad_fn(state.params, micro, norms)
                return jax.tree.map(jnp.add, carry, (g, aux)), None

            micro_batch = jax.tree.map(split, batch)
            zeros = jax.eval_shape(
                lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro_batch), norms))
            init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zeros[1], zeros[0][1]))
            (grads, aux), _ = jax.lax.scan(body, init, micro_batch)
        load = aux["expert_load"]
        metrics = dict(aux["metrics"])
        metrics["grad_norm"] = optax.global_norm(grads)
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state.step)
        if load.size:
            # max/mean expert load, averaged over MoE layers: 1.0 is perfectly balanced.
            metrics["expert_load_max_over_mean"] = jnp.mean(load.max(-1) / jnp.maximum(load.mean(-1), 1e-9))

        def apply(state):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            if bias_update_speed:
                params = models.update_routing_biases(model_cfg, params, load,
                                                      aux["mtp_expert_load"], bias_update_speed)
            return state.replace(step=state.step + 1, params=params, opt_state=opt_state)

        # A non-finite loss or gradient never reaches the state: the step keeps the old one and
        # says so (`nonfinite`); the loop stops the run or counts the skip (train.nonfinite).
        # A branch rather than a select of new and old per leaf: with AdamW the selects cost
        # XLA:CPU three kernels per parameter (params, mu, nu); in the branch the update's own
        # kernels write the new state.
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        new_state = jax.lax.cond(finite, apply, lambda state: state, state)
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        return new_state, metrics

    return step


def sft_step_fn(model_cfg, tx, *, mtp_weight: float = 0.3, grad_accum: int = 1,
                bias_update_speed: float = 0.0, lr_schedule=None):
    """`sft_step(state, batch)`: batch from `sft_batches` (prompt masked) or `pretraining_batches`."""
    return make_step(model_cfg, tx, lm_loss(model_cfg, mtp_weight=mtp_weight, n_micro=grad_accum),
                     lambda b: lm_norms(b, model_cfg), grad_accum=grad_accum,
                     bias_update_speed=bias_update_speed, lr_schedule=lr_schedule)


pretrain_step_fn = sft_step_fn
