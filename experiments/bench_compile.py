"""Compile cost of the train step against depth: program size and first-call seconds, with the
layers scanned (ModelConfig.scan_layers, r1jax/models/layer_scan.py) and unrolled.

  python experiments/bench_compile.py [--size tiny] [--layers 2,4,8] [--scan on,off]
      [--program step,grad] [--compile_cache_dir DIR | --no_compile_cache]

For each depth and setting, in one process: the jitted sft_step (AdamW, routing-bias rule) is
lowered (StableHLO lines of `lower().as_text()`), compiled, and called once; the first call's
seconds are trace + lower + compile + one step, what a training run waits before its first
step. The persistent compilation cache is off unless --compile_cache_dir is given: run the same
command twice with one directory to measure a cold and then a warm cache. DeepSeek-V3 sizes keep
their first_k_dense dense layers; the rest are MoE. `--program grad` compiles the gradient of the
same loss alone (no AdamW, clipping, non-finite guard, bias rule or metrics), to see what the
optimizer's per-leaf work costs. "XLA kernels" counts the compiled program's top-level
operations that run (fusions, GEMMs, copies, sorts...: not parameters, constants, bitcasts or
tuples); XLA:CPU compiles each into its own kernel, so compile seconds follow that count more
than program lines. Prints a markdown table and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import (add_compile_cache_flags, enable_compile_cache,  # noqa: E402
                             single_process_only)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import config, models  # noqa: E402
from r1jax.eval.machine import describe  # noqa: E402
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh  # noqa: E402
from r1jax.train.optim import OptimConfig, make_optimizer  # noqa: E402
from r1jax.train.state import create_sharded_state  # noqa: E402
from r1jax.train.steps import lm_loss, lm_norms, sft_step_fn  # noqa: E402


NOT_KERNELS = ("parameter", "constant", "bitcast", "get-tuple-element", "tuple")


def kernel_count(compiled_hlo: str) -> int:
    """Operations of the compiled program's entry computation that run as kernels."""
    entry = compiled_hlo[compiled_hlo.index("\nENTRY"):]
    entry = entry[:entry.index("\n}")]
    ops = re.findall(r"^\s*(?:ROOT )?%?[\w.\-]+ = .*?\s([a-z][\w\-]*)\(", entry, re.M)
    return sum(op not in NOT_KERNELS for op in ops)


def first_call(cfg, batch_size: int, seq: int, program: str = "step") -> dict:
    """HLO lines, kernels and seconds (lower, compile, first call in all) of cfg's train step
    (program "step") or of its loss's gradient alone ("grad")."""
    mesh = make_mesh(MeshConfig())
    tx = make_optimizer(OptimConfig(), 1000, models.param_roles(cfg))
    with jax.set_mesh(mesh):
        state, _ = create_sharded_state(cfg, tx, mesh, jax.random.key(0))
        tokens = np.random.default_rng(0).integers(1, cfg.vocab_size, (batch_size, seq + 1))
        batch = jax.device_put({"inputs": tokens[:, :-1].astype(np.int32),
                                "targets": tokens[:, 1:].astype(np.int32),
                                "loss_mask": np.ones((batch_size, seq), bool)},
                               batch_sharding(mesh))
        jax.block_until_ready((state, batch))
        if program == "step":
            fn, args = jax.jit(sft_step_fn(cfg, tx, bias_update_speed=1e-3)), (state, batch)
        else:
            loss = lm_loss(cfg, mtp_weight=0.3)
            fn = jax.jit(jax.grad(lambda p, b: loss(p, b, lm_norms(b, cfg))[0]))
            args = (state.params, batch)
        t0 = time.perf_counter()
        lowered = fn.lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        t3 = time.perf_counter()
    return {"hlo_lines": len(lowered.as_text().splitlines()),
            "kernels": kernel_count(compiled.as_text()), "lower_s": t1 - t0,
            "compile_s": t2 - t1, "first_call_s": t3 - t0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=sorted(config.SIZES))
    parser.add_argument("--layers", default="2,4,8", help="depths, comma-separated")
    parser.add_argument("--scan", default="on,off", help="scan_layers settings: on, off or both")
    parser.add_argument("--program", default="step",
                        help="step (the train step) and/or grad (its loss's gradient alone)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=32)
    add_compile_cache_flags(parser, default_dir=None)
    args = parser.parse_args(argv)
    single_process_only("experiments/bench_compile.py")
    scans, programs = args.scan.split(","), args.program.split(",")
    if set(scans) - {"on", "off"}:
        raise SystemExit(f"--scan={args.scan!r}: give on, off or on,off")
    if set(programs) - {"step", "grad"}:
        raise SystemExit(f"--program={args.program!r}: give step, grad or step,grad")
    enable_compile_cache(None if args.no_compile_cache else args.compile_cache_dir)

    print("| model | layers | scan_layers | program | HLO lines | XLA kernels | lower (s) | "
          "compile (s) | first call (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layers in (int(n) for n in args.layers.split(",")):
        for scan in scans:
            cfg = config.get_model_config(args.size, num_layers=layers, scan_layers=scan == "on")
            for program in programs:
                r = first_call(cfg, args.batch, args.seq, program)
                print(f"| {args.size} | {layers} | {scan} | {program} | {r['hlo_lines']:,} | "
                      f"{r['kernels']:,} | {r['lower_s']:.1f} | {r['compile_s']:.1f} | "
                      f"{r['first_call_s']:.1f} |", flush=True)
    cache = "off" if args.no_compile_cache or not args.compile_cache_dir else args.compile_cache_dir
    print(f"\ncompilation cache: {cache}; {describe()}; {datetime.date.today()}")


if __name__ == "__main__":
    main()
