"""The rollout layer, below evaluation, GRPO and distillation: prompt batches -> sampling on the
latent cache -> decoded completions -> scores from each task's own verifier.

`rl`, `eval` and `distill` all build on these functions and never import one another.
"""

from r1jax.rollout.decoding import DRAFTS
from r1jax.rollout.engine import Rollout, generate
from r1jax.rollout.prompts import decode_completions, prompt_batches
from r1jax.rollout.sampling import SamplingConfig, filter_logits, sample
from r1jax.rollout.scoring import (REWARDS, Scores, chain_of_thought, check_rewards, has_r1_format,
                                   language_consistency, score)

__all__ = ["DRAFTS", "REWARDS", "Rollout", "SamplingConfig", "Scores", "chain_of_thought", "check_rewards",
           "decode_completions", "filter_logits", "generate", "has_r1_format",
           "language_consistency", "prompt_batches", "sample", "score"]
