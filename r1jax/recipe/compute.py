"""Training compute of a stage, so that distillation and RL alone are compared at the same
student FLOPs.

Training tokens cost `train_flops_per_token` (6 x activated matmul params + attention, as MFU
counts them); forward-only tokens (sampling, reference log-probs) a third of that. Shapes are
the padded ones the steps run, not the real lengths: that is the compute actually spent.

GRPO, per step: P prompts x G samples = R rows of L = prompt + new tokens - 1;
  mu updates (train) + one sampling pass + one reference pass (forward) = R * L * (mu + 2/3).
SFT / logit distillation, per step: B rows of T tokens (train); the teacher's forward in logit
distillation is teacher compute and is not counted here.
"""

from __future__ import annotations

from r1jax.models.counting import train_flops_per_token


def rl_flops(model_cfg, rl) -> float:
    """Training FLOPs of the GRPO run `rl` (an RLConfig) on `model_cfg`."""
    rows = rl.prompts_per_step * rl.grpo.group_size
    length = rl.max_prompt_len + rl.max_new_tokens - 1
    per_token = train_flops_per_token(model_cfg, length)
    return rl.train.steps * rows * length * per_token * (rl.grpo.inner_updates + 2.0 / 3.0)


def sft_flops(model_cfg, data, steps: int) -> float:
    """Training FLOPs of `steps` SFT steps of `data` (a DataConfig) on `model_cfg`."""
    return steps * data.batch_size * data.seq_len * train_flops_per_token(model_cfg, data.seq_len)


def match_sft_steps(model_cfg, rl, batch_size: int, seq_len: int) -> int:
    """SFT steps of (batch_size, seq_len) that spend the FLOPs of the GRPO run `rl` (>= 1)."""
    per_step = batch_size * seq_len * train_flops_per_token(model_cfg, seq_len)
    return max(1, round(rl_flops(model_cfg, rl) / per_step))
