"""SFT of the tiny model on Countdown worked solutions (prompt tokens masked out of the loss).

Command:  python experiments/train.py --config configs/sft_tiny.py --workdir /tmp/sft
Hardware: 2 CPU cores.  (`:runlocal`: 2 steps.)
Expected: completion NLL (prompt tokens masked) falls from ln(512) ~ 6.2; the full 200-step run
has not been measured yet.
"""

import dataclasses

from r1jax.config import tiny
from r1jax.train.experiment import DataConfig, ExperimentConfig, TrainConfig
from r1jax.train.optim import OptimConfig


def get_config(arg=None):
    cfg = ExperimentConfig(
        name="sft_tiny",
        model=tiny(vocab_size=512, init_std=0.02),
        optim=OptimConfig(lr=2e-3, warmup_steps=20, schedule="cosine"),
        data=DataConfig(task="countdown", mode="sft", seq_len=128, batch_size=16),
        train=TrainConfig(steps=200, log_every=10, ckpt_every=100),
    )
    if arg == "runlocal":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=128, batch_size=4),
                                  train=TrainConfig(steps=2, log_every=1, ckpt_every=2))
    return cfg
