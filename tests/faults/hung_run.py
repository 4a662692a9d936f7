"""A training run whose data pipeline hangs after HANG_AFTER steps (as a stuck reader or a dead
peer would), for the fault tests: `python tests/faults/hung_run.py WORKDIR HANG_AFTER GRACE_S`.
It trains the :runlocal pretraining recipe through the real loop; only its batch source sleeps."""

import dataclasses
import sys
import time

from r1jax.train import loop, supervised
from r1jax.train.experiment import load_config, to_dict


class HangingBatches(supervised.DataBatches):
    def __init__(self, cfg, dataset, hang_after: int):
        super().__init__(cfg, dataset)
        self.hang_after, self.served = hang_after, 0

    def next(self, state):
        if self.served == self.hang_after:
            time.sleep(3600)
        self.served += 1
        return super().next(state)


def main(workdir: str, hang_after: int, grace_s: float) -> None:
    cfg = load_config("configs/pretrain_tiny.py:runlocal")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, steps=100, log_every=1, ckpt_every=1, stop_grace_s=grace_s))
    tok = supervised.shared_tokenizer(workdir, cfg.data)
    source = HangingBatches(cfg, supervised.build_dataset(cfg, tok), hang_after)
    loop.run(workdir, name="hung", model_cfg=cfg.model, mesh_cfg=cfg.mesh, optim=cfg.optim,
             train=cfg.train, make_step=supervised.sft_step_for(cfg), source=source,
             record=to_dict(cfg), pinned=("model", "data"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
