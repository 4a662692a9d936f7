"""`distill_step(state, batch) -> (state, metrics)`: logit distillation on the shared train step.

The batch is an SFT batch (`inputs`, `targets`, `loss_mask`, `segment_ids`, `positions`, see
`r1jax.data.pipeline`) plus the teacher, from one of two sources:

- online: `batch["teacher"]` holds the frozen teacher params and the step runs the teacher
  forward (`teacher_cfg`, any architecture or size with the student's vocabulary) on the same
  tokens, microbatch by microbatch, with the gradient stopped;
- offline: `batch` holds the teacher's top-k log-probs, made once by `teacher_topk_batch`:
  `teacher_topk_logprobs` (B, T, K) float32, `teacher_topk_ids` (B, T, K) int32 and
  `teacher_rest_logprob` (B, T) float32. That is `teacher_bytes_per_token(V, K)` = 8K + 4 bytes
  per token instead of 2V for bf16 logits: 516 B instead of 258,560 B for V3's V = 129,280 and
  K = 64.

Axis glossary: B sequences, T tokens, V vocabulary, K teacher top-k.

The loss is `distill_loss` (r1jax/distill/losses.py): the τ²-scaled divergence, optionally mixed
with the hard-label cross-entropy, as a mean over the loss-masked tokens of the WHOLE batch, so
that accumulated microbatch gradients equal the full-batch gradient exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax import models
from r1jax.distill.losses import Kind, TopKTeacher, check_same_vocab, distill_loss, topk_teacher
from r1jax.train.steps import make_step, step_aux

TEACHER_PARAMS_KEY = "teacher"
TOPK_KEYS = ("teacher_topk_logprobs", "teacher_topk_ids", "teacher_rest_logprob")
KINDS = ("forward_kl", "reverse_kl", "jsd")


def _forward(cfg, params, batch):
    """Logits (B, T, V) and aux of one model on a token batch. MTP heads are not distilled (a
    student's MTP params get no gradient)."""
    seg = batch.get("segment_ids")
    return models.forward(cfg, params, batch["inputs"], positions=batch.get("positions"),
                          attention_mask=None if seg is None else seg > 0, segment_ids=seg,
                          with_mtp=False)


@functools.partial(jax.jit, static_argnames=("teacher_cfg", "k", "temperature"))
def teacher_topk_batch(teacher_cfg, teacher_params, batch: dict, k: int,
                       temperature: float = 1.0) -> dict:
    """The teacher's top-k log-probs at `temperature` for a token batch, to store with it.

    Returns the three `TOPK_KEYS` arrays: (B, T, K) float32, (B, T, K) int32, (B, T) float32.
    Distil with the same `temperature`: the tempered normaliser needs all V logits, so it is
    applied here, before truncation.
    """
    logits, _ = _forward(teacher_cfg, teacher_params, batch)  # (B, T, V)
    top = topk_teacher(logits, k, temperature=temperature)
    return dict(zip(TOPK_KEYS, (top.logprobs, top.ids, top.rest_logprob)))


def _check_teacher(batch: dict, teacher_cfg, topk: int | None) -> None:
    """Fail before any compute when the batch does not carry the teacher the step expects."""
    has_params = TEACHER_PARAMS_KEY in batch
    if teacher_cfg is not None and not has_params:
        raise ValueError(f"distill_step built with teacher_cfg needs the teacher params in "
                         f"batch['{TEACHER_PARAMS_KEY}']")
    if teacher_cfg is None and has_params:
        raise ValueError(f"batch['{TEACHER_PARAMS_KEY}'] holds teacher params but the step was "
                         "built without teacher_cfg")
    if teacher_cfg is None:
        missing = [key for key in TOPK_KEYS if key not in batch]
        if missing:
            raise ValueError(f"distill batch has no teacher: missing {missing} (from "
                             "teacher_topk_batch); or build the step with teacher_cfg and put the "
                             f"teacher params in batch['{TEACHER_PARAMS_KEY}']")
        k = batch[TOPK_KEYS[1]].shape[-1]
        if topk is not None and k != topk:
            raise ValueError(f"the batch's teacher top-k has k={k}; the step was built with "
                             f"topk={topk}")


def distill_step_fn(student_cfg, tx, *, kind: Kind = "forward_kl", temperature: float = 1.0,
                    beta: float = 0.5, hard_label_weight: float = 0.0, teacher_cfg=None,
                    topk: int | None = None, grad_accum: int = 1, bias_update_speed: float = 0.0,
                    lr_schedule=None):
    """Pure `distill_step(state, batch)` for the student `student_cfg` (any model config).

    teacher_cfg: the online teacher's config; its params come in `batch["teacher"]` (shard them
    like the teacher's params, e.g. `sharding.param_shardings(teacher_cfg, mesh)`). None: the
    batch carries the offline top-k arrays. topk: with an online teacher, distil against its
    top-k plus a rest bucket (the offline loss, computed in the step); offline, the k the batch
    must have. Metrics: loss, `kind` (the τ²-scaled divergence), hard_ce (when
    hard_label_weight > 0), balance_loss, grad_norm, lr (with lr_schedule).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    if kind == "jsd" and not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    if not 0.0 <= hard_label_weight <= 1.0:
        raise ValueError(f"hard_label_weight={hard_label_weight} must be in [0, 1]")
    if topk is not None and not 0 < topk <= student_cfg.vocab_size:
        raise ValueError(f"topk={topk} must be in [1, vocab_size={student_cfg.vocab_size}]")
    if teacher_cfg is not None:
        check_same_vocab(student_cfg.vocab_size, teacher_cfg.vocab_size)

    def norms_fn(batch):
        return {"n_tokens": jnp.maximum(batch["loss_mask"].astype(jnp.float32).sum(), 1.0)}

    def teacher_of(teacher_params, batch):
        if teacher_params is None:
            return TopKTeacher(*(batch[key] for key in TOPK_KEYS))
        logits, _ = _forward(teacher_cfg, jax.lax.stop_gradient(teacher_params), batch)  # (B, T, V)
        return logits if topk is None else topk_teacher(logits, topk, temperature=temperature)

    def loss_fn_with(teacher_params):
        def loss_fn(params, batch, norms):
            logits, aux = _forward(student_cfg, params, batch)  # (B, T, V)
            mask = batch["loss_mask"]
            mean, parts = distill_loss(logits, teacher_of(teacher_params, batch), mask, kind=kind,
                                       temperature=temperature, beta=beta,
                                       hard_label_weight=hard_label_weight, labels=batch["targets"])
            # distill_loss averages over this microbatch's tokens; its share of the batch's
            # tokens makes it a term of the batch-wide mean (exact under grad accumulation).
            share = mask.astype(jnp.float32).sum() / norms["n_tokens"]
            balance = aux["balance_loss"] / grad_accum
            loss = mean * share + balance
            metrics = {"loss": loss, kind: parts["soft_loss"] * share, "balance_loss": balance}
            if hard_label_weight > 0.0:
                metrics["hard_ce"] = parts["hard_loss"] * share
            return loss, step_aux(aux, metrics)
        return loss_fn

    def distill_step(state, batch: dict):
        _check_teacher(batch, teacher_cfg, topk)
        batch = dict(batch)
        # The teacher params are not split into microbatches: every microbatch's loss closes
        # over all of them.
        teacher_params = batch.pop(TEACHER_PARAMS_KEY, None)
        step = make_step(student_cfg, tx, loss_fn_with(teacher_params), norms_fn,
                         grad_accum=grad_accum, bias_update_speed=bias_update_speed,
                         lr_schedule=lr_schedule)
        return step(state, batch)

    return distill_step
