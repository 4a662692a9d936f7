"""Where the train step's time goes: XLA:CPU's per-operation trace, summed by model code.

  python experiments/profile_train_step.py [--size deepseek_v3_small] [--batch 8] [--seq 256]
      [--dtype float32] [--steps 3] [--top 25]

Runs the jitted sft_step (forward, backward, AdamW) of a named size, traces `--steps` steps with
`jax.profiler` (after the compile), and charges every executed XLA operation to the r1jax function
that emitted it: the compiled HLO names each operation's Python stack, and the innermost r1jax
frame outside the projection helper (r1jax/nn/linear.py) names the caller, so a projection is
charged to MLA, the dense FFN or an expert. Operations of the transposed (backward) program are
marked "bwd". Prints milliseconds per step and shares, and for the rows that run GEMMs their
GFLOP (counted from the compiled program's dots) and rate over those operations' time, beside
the rate of one 2048x256x1024 float32 GEMM (`experiments/profile_peer_step.py` prints the same
for HF transformers' step). On a machine shared with other jobs an operation's time includes
the time its thread waited for a core, so read shares, not totals. Pin the process
(`taskset -c 0`) for the one-core picture.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
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


def dot_flops(hlo: str) -> dict[str, float]:
    """HLO operation name -> floating-point operations of the dots it runs: its own, or those of
    the computations it calls (XLA:CPU wraps most GEMMs in library fusions), 2 x the result's
    elements x the contracted size. Meant for programs without loops, where each operation runs
    once per call."""
    instruction = re.compile(  # name = shape (an array's, or a tuple's) op(operands)
        r"\s*(?:ROOT )?%?([\w.\-]+) = (?:\(.*?\)|\w+\[([\d,]*)\]\S*) ([\w\-]+)\(([^)]*)\)")
    dims, own, calls, body, current = {}, {}, {}, collections.defaultdict(list), None
    for line in hlo.splitlines():
        header = re.match(r"(?:ENTRY )?%?([\w.\-]+) \(.*\{$", line)
        m = instruction.match(line)
        if header or not m:
            current = header.group(1) if header else current
            continue
        name, shape, op, operands = m.groups()
        dims[name] = [int(d) for d in (shape or "").split(",") if d]
        body[current].append(name)
        calls[name] = re.findall(r"calls=%?([\w.\-]+)", line)
        own[name] = 0.0
        if op == "dot":
            lhs = dims[operands.split(",")[0].strip().lstrip("%")]
            contracted = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1)
            own[name] = 2.0 * math.prod(dims[name]) * math.prod(
                lhs[int(i)] for i in contracted.split(",") if i)

    @functools.cache
    def flops(name: str) -> float:
        return own[name] + sum(flops(i) for c in calls[name] for i in body[c])

    return {name: flops(name) for name in own}


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


def print_shares(ms: collections.Counter, per: str, top: int, total: float | None = None,
                 flops: collections.Counter | None = None,
                 dot_ms: collections.Counter | None = None, label: str = "r1jax code") -> None:
    """A markdown table of the `top` largest entries of ms (key: a cell or a tuple of cells),
    milliseconds `per` call and shares of `total` (default: their sum); with `flops` (same keys,
    per call) also the GEMMs' GFLOP and their rate over the time of the operations that run them
    (`dot_ms`, default: all of the entry's time). `label` names the first column."""
    total = sum(ms.values()) if total is None else total
    first = next(iter(ms), ("",))
    cells = len(first) if isinstance(first, tuple) else 1
    names = [label, "operation", "output"][:cells]
    rate = " GEMM GFLOP | GEMM GFLOP/s |" if flops is not None else ""
    print("| " + " | ".join(names) + f" | ms per {per} | share |" + rate)
    print("|" + "---|" * cells + "---:|---:|" + "---:|---:|" * (flops is not None))
    for key, t in ms.most_common(top):
        g = flops.get(key, 0.0) / 1e9 if flops is not None else 0.0
        row = f" {g:.2f} | {g / (dot_ms or ms)[key] * 1e3:.0f} |" if g else " | |"
        cell = key if isinstance(key, tuple) else (key,)
        print("| " + " | ".join(cell) + f" | {t:.1f} | {100 * t / total:.1f}% |"
              + (row if flops is not None else ""))


def best_seconds(call, calls: int = 7) -> float:
    """The shortest of `calls` timed calls of call(), after one untimed call."""
    call()
    best = math.inf
    for _ in range(calls):
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_rate(m: int = 2048, k: int = 256, n: int = 1024) -> float:
    """GFLOP/s of one jitted float32 (m, k) x (k, n) GEMM at its best: the rate the step's dots
    are measured against."""
    x, w = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    gemm = jax.jit(jnp.dot)
    return 2 * m * k * n / best_seconds(lambda: gemm(x, w).block_until_ready()) / 1e9


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
    peak = gemm_rate()  # before the trace: the profiler's threads stay behind it
    tx = make_optimizer(OptimConfig(lr=1e-4), 1000, models.param_roles(cfg))
    mesh = make_mesh(MeshConfig())
    with jax.set_mesh(mesh):
        state, _ = create_sharded_state(cfg, tx, mesh, jax.random.key(0))
    tokens = np.random.default_rng(0).integers(1, cfg.vocab_size, (args.batch, args.seq + 1))
    batch = {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32),
             "loss_mask": np.ones((args.batch, args.seq), bool)}
    step = jax.jit(sft_step_fn(cfg, tx), donate_argnums=0)
    hlo = step.lower(state, batch).compile().as_text()
    sites, op_flops = operation_sites(hlo), dot_flops(hlo)
    carry = {"state": state}

    def run():
        carry["state"], metrics = step(carry["state"], batch)
        jax.block_until_ready(metrics["loss"])

    run()  # compile + warm-up
    ms, flops, dot_ms = collections.Counter(), collections.Counter(), collections.Counter()
    for e in traced_events(run, args.steps):
        if e.get("name") in sites:
            site, t = sites[e["name"]], e["dur"] / 1e3 / args.steps
            ms[site] += t
            flops[site] += op_flops.get(e["name"], 0.0) / args.steps
            dot_ms[site] += t if op_flops.get(e["name"]) else 0.0
    from r1jax.eval.machine import describe

    print(f"{args.size} {args.dtype} {args.batch}x{args.seq}, sft_step, {args.steps} traced steps; "
          f"{describe()}")
    gflop, gemm_ms = sum(flops.values()) / 1e9, sum(dot_ms.values())
    print(f"XLA operations: {sum(ms.values()):.1f} ms per step: those with dots "
          f"{gemm_ms:.1f} ms ({gflop:.2f} GFLOP, {gflop / gemm_ms * 1e3:.0f} GFLOP/s), the others "
          f"{sum(ms.values()) - gemm_ms:.1f} ms; one 2048x256x1024 float32 GEMM on this machine: "
          f"{peak:.0f} GFLOP/s\n")
    print_shares(ms, "step", args.top, flops=flops, dot_ms=dot_ms)


if __name__ == "__main__":
    main()
