"""Where the train step's time goes: XLA:CPU's per-operation trace, summed by model code.

  python experiments/profile_train_step.py [--size deepseek_v3_small] [--batch 8] [--seq 256]
      [--dtype float32] [--steps 3] [--top 25]

Runs the jitted sft_step (forward, backward, AdamW) of a named size, traces `--steps` steps with
`jax.profiler` (after the compile), and charges every executed XLA operation to the r1jax function
that emitted it: the compiled HLO names each operation's Python stack, and the innermost r1jax
frame outside the projection helper (r1jax/nn/linear.py) names the caller, so a projection is
charged to MLA, the dense FFN or an expert. Operations of the transposed (backward) program are
marked "bwd". Prints milliseconds per step and shares; on a machine shared with other jobs an
operation's time includes the time its thread waited for a core, so read shares, not totals.
Pin the process (`taskset -c 0`) for the one-core picture.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import config, models  # noqa: E402
from r1jax.sharding import MeshConfig, make_mesh  # noqa: E402
from r1jax.train.optim import OptimConfig, make_optimizer  # noqa: E402
from r1jax.train.state import create_sharded_state  # noqa: E402
from r1jax.train.steps import sft_step_fn  # noqa: E402

HELPERS = ("/r1jax/nn/linear.py",)  # frames charged to their caller


def hlo_tables(hlo: str) -> dict[str, dict[int, str]]:
    """The FileNames / FunctionNames / FileLocations / StackFrames tables of compiled HLO text."""
    tables, current = {}, None
    for line in hlo.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current, tables[line] = line, {}
        elif current and re.match(r"^\d+ ", line):
            key, value = line.split(" ", 1)
            tables[current][int(key)] = value
        elif current and not line.strip():
            current = None
    return tables


def operation_sites(hlo: str) -> dict[str, str]:
    """HLO operation name -> "file.py function" of its innermost r1jax frame (+ " bwd")."""
    t = hlo_tables(hlo)
    files = {k: v.strip('"') for k, v in t["FileNames"].items()}
    functions = {k: v.strip('"') for k, v in t["FunctionNames"].items()}
    fields = lambda v: {k: int(n) for k, n in re.findall(r"(\w+)=(\d+)", v)}  # noqa: E731
    locations = {k: (files[f["file_name_id"]], functions[f["function_name_id"]])
                 for k, f in ((k, fields(v)) for k, v in t["FileLocations"].items())}
    frames = {k: (f["file_location_id"], f["parent_frame_id"])
              for k, f in ((k, fields(v)) for k, v in t["StackFrames"].items())}

    def site(frame: int) -> str:
        """The innermost r1jax frame outside HELPERS; else the innermost helper frame (a
        projection whose caller the trace did not keep); else the innermost file (optax...)."""
        seen, fallbacks = set(), []
        while frame in frames and frame not in seen:
            seen.add(frame)
            location, parent = frames[frame]
            path, function = locations[location]
            name = f"{function.split('.')[-1]}"
            if "/r1jax/" in path and not path.endswith(HELPERS):
                return f"{path.split('/r1jax/', 1)[1]} {name}"
            fallbacks.append((0 if "/r1jax/" in path else 1,
                              f"{'/'.join(path.split('/')[-2:])} {name}"))
            frame = parent
        return min(fallbacks, key=lambda f: f[0])[1] if fallbacks else "unknown"

    sites = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*stack_frame_id=(\d+)", line)
        if m:
            name = re.search(r'op_name="([^"]+)"', line)
            backward = name is not None and "transpose(" in name.group(1)
            sites[m.group(1)] = site(int(m.group(2))) + (" bwd" if backward else "")
    return sites


def traced_events(run, calls: int) -> list[dict]:
    """The complete ("X") events of `calls` calls of run() in jax.profiler's trace."""
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for _ in range(calls):
            run()
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    return [e for e in events if e.get("ph") == "X"]


def print_shares(ms: collections.Counter, per: str, top: int, total: float | None = None) -> None:
    """A markdown table of the `top` largest entries of ms (key: a cell or a tuple of cells),
    milliseconds `per` call and shares of `total` (default: their sum)."""
    total = sum(ms.values()) if total is None else total
    first = next(iter(ms), ("",))
    cells = len(first) if isinstance(first, tuple) else 1
    names = ["r1jax code", "operation", "output"][:cells]
    print("| " + " | ".join(names) + f" | ms per {per} | share |")
    print("|" + "---|" * cells + "---:|---:|")
    for key, t in ms.most_common(top):
        key = key if isinstance(key, tuple) else (key,)
        print("| " + " | ".join(key) + f" | {t:.1f} | {100 * t / total:.1f}% |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="deepseek_v3_small", choices=sorted(config.SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    single_process_only("experiments/profile_train_step.py")
    jax.config.update("jax_traceback_in_locations_limit", 64)  # deep enough to reach the caller
    cfg = config.get_model_config(args.size).replace(dtype=args.dtype)
    tx = make_optimizer(OptimConfig(lr=1e-4), 1000, models.param_roles(cfg))
    mesh = make_mesh(MeshConfig())
    with jax.set_mesh(mesh):
        state, _ = create_sharded_state(cfg, tx, mesh, jax.random.key(0))
    tokens = np.random.default_rng(0).integers(1, cfg.vocab_size, (args.batch, args.seq + 1))
    batch = {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32),
             "loss_mask": np.ones((args.batch, args.seq), bool)}
    step = jax.jit(sft_step_fn(cfg, tx), donate_argnums=0)
    sites = operation_sites(step.lower(state, batch).compile().as_text())
    carry = {"state": state}

    def run():
        carry["state"], metrics = step(carry["state"], batch)
        jax.block_until_ready(metrics["loss"])

    run()  # compile + warm-up
    ms = collections.Counter()
    for e in traced_events(run, args.steps):
        if e.get("name") in sites:
            ms[sites[e["name"]]] += e["dur"] / 1e3 / args.steps
    from r1jax.eval.machine import describe

    print(f"{args.size} {args.dtype} {args.batch}x{args.seq}, sft_step, {args.steps} traced steps; "
          f"{describe()}")
    print(f"XLA operations: {sum(ms.values()):.1f} ms per step\n")
    print_shares(ms, "step", args.top)


if __name__ == "__main__":
    main()
