"""Pretraining / SFT entry point.

  python experiments/train.py --config configs/pretrain_tiny.py:runlocal --workdir /tmp/run \
      [--config.train.steps=50 ...]

Multi-host: pass --coordinator_address host:port --num_processes N --process_id i (or set
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) and run the same command on every
process; the mesh then spans all processes' devices.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import parse_args  # noqa: E402


def main(argv=None):
    args, cfg = parse_args(argv, description=__doc__)
    from r1jax.distributed import is_main
    from r1jax.train.supervised import run

    history = run(cfg, args.workdir)
    if history and is_main():
        last = history[-1]
        print(f"step {last['step']}: loss {last['loss']:.4f}")


if __name__ == "__main__":
    main()
