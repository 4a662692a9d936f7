"""One small GRPO stage as a user's process runs it (the caller sets the device count with
XLA_FLAGS): `python tests/rl/grpo_run.py WORKDIR DATA,FSDP,EXPERT,TENSOR STEPS`.

The policy starts from a random tiny MoE-MLA checkpoint written once into WORKDIR (a second run
on the same WORKDIR resumes). Prints one line `RESULT {json}`: the metrics logged by this run and
how many times the expert-parallel MoE dispatch was traced.
"""

import json
import os
import sys

import jax

from r1jax import config, models
from r1jax.data import tokenizer as tokenizer_lib
from r1jax.nn import moe_dispatch
from r1jax.rl import grpo_stage
from r1jax.rl.grpo_step import GRPOConfig
from r1jax.sharding import MeshConfig
from r1jax.train.checkpoint import Checkpointer
from r1jax.train.experiment import TrainConfig

MODEL = config.tiny(vocab_size=512, num_layers=2, first_k_dense=1, num_mtp_modules=0)


def expert_parallel_calls() -> list:
    """Counts traces of the expert-parallel dispatch (the shard_map over the `expert` axis)."""
    calls = []
    original = moe_dispatch._expert_parallel

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    moe_dispatch._expert_parallel = counted
    return calls


def main(workdir: str, mesh: str, steps: int) -> None:
    tok = tokenizer_lib.load_or_train_tokenizer(workdir)
    init = os.path.join(workdir, "init")
    if not os.path.exists(init):  # a random policy in the loop's checkpoint layout
        ckpt = Checkpointer(init, save_every=1, keep=1, async_save=False)
        ckpt.save(1, {"train": {"params": models.init(MODEL, jax.random.key(0))}}, {})
        ckpt.close()
    rl = grpo_stage.RLConfig(
        task="arithmetic", task_kwargs=(("max_digits", 2),), prompts_per_step=4, max_new_tokens=12,
        # A random policy is never right; the language reward varies from sample to sample, so
        # the advantages (and the policy gradient) are not zero.
        rewards=(("accuracy", 1.0), ("language", 1.0)),
        grpo=GRPOConfig(group_size=2, kl_beta=0.04, aggregation="token"),
        train=TrainConfig(steps=steps, log_every=1, ckpt_every=1, init_from=init,
                          async_checkpoint=False),
        mesh=MeshConfig(*map(int, mesh.split(","))))
    calls = expert_parallel_calls()
    history = grpo_stage.run(MODEL, rl, tok, os.path.join(workdir, "grpo"))
    print("RESULT " + json.dumps({"history": history, "expert_parallel_calls": len(calls),
                                  "devices": jax.device_count()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
