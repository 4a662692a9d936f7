"""Shared command line of the experiment scripts: --config recipe, --config.x overrides,
--workdir, and the jax.distributed flags, which every script that parses them honours.

Multi-host: run the same command on every process with --coordinator_address host:port
--num_processes N --process_id i (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID); the mesh then spans all processes' devices and only process 0 writes shared
files. Scripts that run in one process only call `single_process_only()`, which refuses those
variables with a message instead of running N unaware copies.
"""

from __future__ import annotations

import argparse
import os

DISTRIBUTED_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def parse_args(argv=None, *, description: str = "", add_arguments=None,
               single_process: str | None = None):
    """(args, config), with jax.distributed initialised when more than one process is asked for;
    `add_arguments(parser)` adds a script's own flags. A script that runs in one process only
    names itself in `single_process`: the distributed flags and variables are then refused."""
    if single_process:
        single_process_only(single_process)
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--config", required=True, help="configs/<recipe>.py[:arg]")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, plots")
    parser.add_argument("--coordinator_address", default=os.environ.get("JAX_COORDINATOR_ADDRESS"))
    parser.add_argument("--num_processes", type=int, default=int(os.environ.get("JAX_NUM_PROCESSES", "1")))
    parser.add_argument("--process_id", type=int, default=int(os.environ.get("JAX_PROCESS_ID", "0")))
    args, rest = parser.parse_known_args(argv)
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {bad}")

    from r1jax.train.experiment import apply_overrides, load_config
    from r1jax.train.hf_start import start_from_hf

    cfg = apply_overrides(load_config(args.config), rest)
    # Resolved once here, knowing which fields the command line set: an override that
    # contradicts a checkpoint (its shapes, its tokenizer) is refused.
    overridden = [r.removeprefix("--config.").partition("=")[0] for r in rest]
    try:
        cfg = start_from_hf(cfg, overridden)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{e}") from None
    if single_process and args.num_processes > 1:
        raise SystemExit(f"{single_process} runs in a single process; drop --num_processes")
    setup_distributed(args)
    return args, cfg


def setup_distributed(args) -> None:
    """jax.distributed.initialize when more than one process is asked for (CPU: gloo)."""
    if args.num_processes <= 1:
        return
    import jax

    if not args.coordinator_address:
        raise SystemExit("--num_processes > 1 needs --coordinator_address host:port")
    if not 0 <= args.process_id < args.num_processes:
        raise SystemExit(f"--process_id={args.process_id} must be in [0, {args.num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)


def single_process_only(script: str) -> None:
    """Refuse the distributed environment variables in a script that runs in one process."""
    asked = [name for name in DISTRIBUTED_VARIABLES if os.environ.get(name)]
    if asked and int(os.environ.get("JAX_NUM_PROCESSES", "1") or 1) > 1:
        raise SystemExit(f"{script} runs in a single process; unset {', '.join(asked)} (it has no "
                         "--num_processes flag)")
