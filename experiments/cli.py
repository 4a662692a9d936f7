"""Shared command line of the experiment scripts: --config recipe, --config.x overrides,
--workdir, the persistent compilation cache, and the jax.distributed flags, which every script
that parses them honours.

Compilation cache: on by default in DEFAULT_COMPILE_CACHE_DIR (or $JAX_COMPILATION_CACHE_DIR when
set, as the test suite sets it for the scripts it starts); --compile_cache_dir DIR moves it,
--no_compile_cache turns it off. One directory for every workdir and recipe: XLA keys each entry
by the program, the jax/XLA version, the devices and the flags, so runs of different recipes
share what they can and never read a wrong entry; a second run of a recipe skips most of its
compiles (BENCHMARKS.md, "Compile time").

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
DEFAULT_COMPILE_CACHE_DIR = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "r1jax", "jax")
# Programs that compile faster than this are not written: reading an entry back costs about as
# much as compiling a tiny program, and every eager op would otherwise leave a file.
COMPILE_CACHE_MIN_COMPILE_SECS = 0.5


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
    add_compile_cache_flags(parser)
    parser.add_argument("--config", required=True, help="configs/<recipe>.py[:arg]")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, plots")
    parser.add_argument("--coordinator_address", default=os.environ.get("JAX_COORDINATOR_ADDRESS"))
    parser.add_argument("--num_processes", type=int, default=int(os.environ.get("JAX_NUM_PROCESSES", "1")))
    parser.add_argument("--process_id", type=int, default=int(os.environ.get("JAX_PROCESS_ID", "0")))
    args, rest = parser.parse_known_args(argv)
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {bad}")
    # Before anything compiles (loading a recipe or checkpoint may).
    enable_compile_cache(None if args.no_compile_cache else args.compile_cache_dir)

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


def add_compile_cache_flags(parser, default_dir: str | None = "") -> None:
    """--compile_cache_dir and --no_compile_cache; default_dir "" means the shared default
    ($JAX_COMPILATION_CACHE_DIR, else DEFAULT_COMPILE_CACHE_DIR), None means off unless given."""
    if default_dir == "":
        default_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_COMPILE_CACHE_DIR
    parser.add_argument("--compile_cache_dir", default=default_dir,
                        help="persistent XLA compilation cache (default: %(default)s)")
    parser.add_argument("--no_compile_cache", action="store_true",
                        help="compile everything afresh; read and write no compilation cache")


def enable_compile_cache(directory: str | None) -> None:
    """Point jax's persistent compilation cache at `directory` (~ expanded), or turn it off
    (None). Thresholds already set in the environment (the test suite's) are kept."""
    import jax

    if directory is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          COMPILE_CACHE_MIN_COMPILE_SECS)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor


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
