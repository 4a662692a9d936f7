"""Where the sampler's time goes: XLA:CPU's per-operation trace of greedy generation, summed by
model code and by operation shape.

  python experiments/profile_decode.py [--size deepseek_v3_small] [--rows 16] [--prompt 32]
      [--new_tokens 128] [--draft none|mtp] [--runs 2] [--top 25]

Compiles the sampler (prefill + the decode loop, `r1jax/rollout/sampling.py`) for a random model
of a named size, traces `--runs` generations with `jax.profiler`, and charges every executed XLA
operation to the r1jax function that emitted it, as `experiments/profile_train_step.py` does.
`--draft mtp` profiles speculative decoding instead (`r1jax/rollout/speculative.py`: the MTP
module drafts, the main model verifies on 2 tokens per step; a random model's drafts are mostly
rejected, so read the cost per step, not tokens/s).
Prints milliseconds per generation and shares: by model code, then by (code, operation kind,
output shape), where a copy of a weight inside the loop shows as a kLoop fusion of its shape.
On a machine shared with other jobs read shares, not totals; pin it (`taskset -c 0`) for the
one-core picture.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402
from experiments.profile_train_step import (operation_sites, print_shares,  # noqa: E402
                                             traced_events)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import config, models  # noqa: E402
from r1jax.eval.machine import describe  # noqa: E402
from r1jax.rollout.decoding import DRAFTS  # noqa: E402
from r1jax.rollout.sampling import SamplingConfig, _sample  # noqa: E402
from r1jax.rollout.speculative import _sample_speculative  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="deepseek_v3_small", choices=sorted(config.SIZES))
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--draft", default="none", choices=DRAFTS)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    single_process_only("experiments/profile_decode.py")
    jax.config.update("jax_traceback_in_locations_limit", 64)  # deep enough to reach the caller
    cfg = config.get_model_config(args.size)
    params = models.init(cfg, jax.random.key(0))
    tokens = np.random.default_rng(0).integers(1, cfg.vocab_size, (args.rows, args.prompt))
    prompt, mask = jnp.asarray(tokens, jnp.int32), jnp.ones((args.rows, args.prompt), jnp.int32)
    # The shapes `sample` compiles for greedy decoding (temperature and top-p are traced values).
    scfg = dataclasses.replace(SamplingConfig(max_new_tokens=args.new_tokens, greedy=True,
                                              draft=args.draft), temperature=1.0, top_p=1.0)
    if args.draft == "mtp":
        models.check_has_mtp(cfg)
    sampler = _sample_speculative if args.draft == "mtp" else _sample
    call = (cfg, scfg, params, prompt, mask, jax.random.key(0), np.float32(1), np.float32(1))
    hlo = sampler.lower(*call).compile().as_text()
    sites = operation_sites(hlo)
    shapes = dict(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+)", hlo, re.M))

    def run():
        jax.block_until_ready(sampler(*call))

    run()  # compile + warm-up
    by_site, by_op = collections.Counter(), collections.Counter()
    for e in traced_events(run, args.runs):
        if e.get("name") in sites:
            ms = e["dur"] / 1e3 / args.runs
            by_site[sites[e["name"]]] += ms
            by_op[(sites[e["name"]], e["name"].rstrip("0123456789."),
                   f"`{shapes.get(e['name'], '?')}`")] += ms
    total = sum(by_site.values())
    print(f"{args.size}, greedy {args.rows} x ({args.prompt} + {args.new_tokens}), "
          f"draft {args.draft}, {args.runs} traced generations; {describe()}")
    print(f"XLA operations: {total:.1f} ms per generation\n")
    print_shares(by_site, "generation", args.top)
    print()
    print_shares(by_op, "generation", args.top, total)


if __name__ == "__main__":
    main()
