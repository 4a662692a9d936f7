"""R1-Zero in miniature on multi-digit addition: tiny MoE-MLA base pretrained on the embedded
corpus (worked solutions, 30% with a planted slip), then GRPO with accuracy + format rewards.

Command:  python experiments/r1_zero.py --config configs/r1_zero_tiny.py --workdir /tmp/r1_zero
Hardware: 2 CPU cores.  Runtime: <= 10 min.  (`:runlocal`: a smoke run of a few steps.)
Expected: held-out pass@1 rises by >= 15 points over the pretrained base.
"""

import dataclasses

from r1jax.config import tiny
from r1jax.eval.evaluate import EvalConfig
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.rl.r1_zero import R1ZeroConfig, RLConfig
from r1jax.train.experiment import DataConfig, ExperimentConfig, TrainConfig
from r1jax.train.optim import OptimConfig


def get_config(arg=None):
    pretrain = ExperimentConfig(
        name="pretrain_arithmetic",
        model=tiny(vocab_size=512, init_std=0.02),
        optim=OptimConfig(lr=3e-3, warmup_steps=20, schedule="cosine"),
        data=DataConfig(task="corpus", corpus_tasks=("arithmetic",), seq_len=128, batch_size=16),
        train=TrainConfig(steps=300, log_every=25, ckpt_every=300),
    )
    rl = RLConfig(task="arithmetic", steps=60, prompts_per_step=8, max_new_tokens=48,
                  grpo=GRPOConfig(group_size=8, kl_beta=0.001, aggregation="grpo"),
                  eval=EvalConfig(num_problems=64, k=4, max_new_tokens=48))
    cfg = R1ZeroConfig(name="r1_zero_tiny", pretrain=pretrain, rl=rl)
    if arg == "runlocal":
        cfg = dataclasses.replace(
            cfg, pretrain=dataclasses.replace(pretrain, train=TrainConfig(steps=2, log_every=1, ckpt_every=2)),
            rl=dataclasses.replace(rl, steps=2, prompts_per_step=2,
                                   grpo=dataclasses.replace(rl.grpo, group_size=2),
                                   eval=EvalConfig(num_problems=4, k=2, prompts_per_batch=4,
                                                   max_new_tokens=16), max_new_tokens=16))
    return cfg
