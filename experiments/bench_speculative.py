"""Speculative decoding with MTP drafts [V3 §5.4.3] vs plain decoding: acceptance, tokens/s.

  python experiments/bench_speculative.py --config configs/r1_pipeline_tiny.py \
      --workdir runs/r1_pipeline --stage final_rl [--rows 16] [--repeats 7]
  python experiments/bench_speculative.py [--size tiny] [--rows 16] [--new_tokens 48]
      [--mtp_modules 1]

With a pipeline workdir: the stage's trained params (its MTP module trained alongside, V3 §2.2),
the first --rows held-out prompts of its evaluation set, stopping at EOS, max_new_tokens and
prompt length as its evaluation samples. Without: a random model of --size on random prompts (its
untrained MTP module drafts at chance level: the cost of a 2-token step without its gain;
`--mtp_modules 1` gives a size without one, deepseek_v3_small, its MTP module). The workdir is
only read.

Prints a markdown table for greedy and for T=0.6 / top-p 0.95 (R1's evaluation sampling):
drafts accepted of proposed, tokens per speculative step (1 + acceptance, less the tokens dropped
at a stop or at max_new_tokens), generated tokens per second of plain and speculative decoding
(median of --repeats rounds after a compile call, each round timing one call of both) and their
ratio, the cost of a speculative step over a plain one (seconds per loop step; the loop runs
until its longest row stops), whether the greedy outputs are identical, and mean lengths (the
sampled ones should agree up to noise). With acceptance a, speculative decoding pays when the
step cost is below 1 + a.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import config, models  # noqa: E402
from r1jax.eval.machine import describe  # noqa: E402
from r1jax.rollout.sampling import SamplingConfig, sample  # noqa: E402


def stage_setup(args):
    """(model config, params, prompt tokens (B, P), prompt mask (B, P), stop ids, new tokens) of a
    pipeline stage: its checkpoint, its tokenizer, its held-out prompts."""
    from r1jax import data as rdata
    from r1jax.eval.evaluate import heldout_set
    from r1jax.recipe.export import stage_model, tokenizer_file
    from r1jax.recipe.stages import stage
    from r1jax.rollout import prompt_batches
    from r1jax.train.checkpoint import load_params
    from r1jax.train.experiment import load_config
    from r1jax.train.hf_start import start_from_hf

    cfg = start_from_hf(load_config(args.config))
    if stage(args.stage).is_data:
        raise SystemExit(f"--stage={args.stage!r} writes a data set, not a model")
    model_cfg = stage_model(cfg, args.stage)
    params = load_params(model_cfg, os.path.join(args.workdir, stage(args.stage).writes))
    tok = rdata.load_tokenizer(tokenizer_file(cfg, args.workdir))
    ev = getattr(cfg, args.stage).eval
    batch, _ = next(prompt_batches(tok, heldout_set(ev)[:args.rows], batch_size=args.rows,
                                   max_prompt_len=ev.max_prompt_len))
    return (model_cfg, params, jnp.asarray(batch["prompt_tokens"]),
            jnp.asarray(batch["prompt_mask"]), (tok.eos_id,), ev.max_new_tokens)


def random_setup(args):
    model_cfg = config.get_model_config(args.size)
    if args.mtp_modules is not None:
        model_cfg = model_cfg.replace(num_mtp_modules=args.mtp_modules)
    params = models.init(model_cfg, jax.random.key(0))
    prompt = jax.random.randint(jax.random.key(1), (args.rows, 32), 1, model_cfg.vocab_size)
    return model_cfg, params, prompt, jnp.ones_like(prompt, bool), (), args.new_tokens


def timed_pair(cfg, plain_cfg, spec_cfg, params, prompt, mask, repeats):
    """Outputs (on the host) and median seconds of plain and speculative decoding: a compile call
    each, then `repeats` rounds that time one call of each back to back, so both see the same
    load of a shared machine."""
    outs, times = {}, {"plain": [], "spec": []}
    for i in range(repeats + 1):
        for name, scfg in (("plain", plain_cfg), ("spec", spec_cfg)):
            t0 = time.perf_counter()
            outs[name] = jax.device_get(sample(cfg, scfg, params, prompt, mask, jax.random.key(i)))
            if i:
                times[name].append(time.perf_counter() - t0)
    plain_s, spec_s = statistics.median(times["plain"]), statistics.median(times["spec"])
    return outs["plain"], outs["spec"], plain_s, spec_s


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="the pipeline's recipe (with --workdir and --stage)")
    parser.add_argument("--workdir", help="a pipeline workdir (read only)")
    parser.add_argument("--stage", default="final_rl")
    parser.add_argument("--size", default="tiny", help="random model size without a workdir")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=48, help="random model only")
    parser.add_argument("--mtp_modules", type=int, help="random model only: MTP modules")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    single_process_only("experiments/bench_speculative.py")
    if bool(args.workdir) != bool(args.config):
        parser.error("--workdir and --config go together (the recipe the pipeline ran)")
    if args.workdir and args.mtp_modules is not None:
        parser.error("--mtp_modules sets up a random model: the workdir's model is as trained")
    cfg, params, prompt, mask, stop_ids, n = (stage_setup if args.workdir else random_setup)(args)
    source = f"{args.stage} of {args.workdir}" if args.workdir else f"random {args.size}"

    print(f"{source}: {prompt.shape[0]} prompts of {prompt.shape[1]} tokens, "
          f"up to {n} new tokens\n")
    print("| decoding | drafts accepted | tokens per step | plain tokens/s | speculative tokens/s "
          "| speedup | step cost spec. / plain | greedy identical | mean length plain / spec. |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, kw in (("greedy", dict(greedy=True)), ("T=0.6, top-p 0.95",
                                                      dict(temperature=0.6, top_p=0.95))):
        scfg = SamplingConfig(max_new_tokens=n, stop_ids=stop_ids, **kw)
        plain, spec, plain_s, spec_s = timed_pair(cfg, scfg, dataclasses.replace(scfg, draft="mtp"),
                                                  params, prompt, mask, args.repeats)
        accepted, proposed = spec["drafts_accepted"].sum(), spec["drafts_proposed"].sum()
        plain_tps, spec_tps = plain["lengths"].sum() / plain_s, spec["lengths"].sum() / spec_s
        identical = ("yes" if np.array_equal(plain["tokens"], spec["tokens"]) else "NO"
                     ) if "greedy" in kw else "-"
        # Tokens after the first (chosen from the prefill) per main-model step on [token, draft].
        per_step = (spec["lengths"] - 1).sum() / max(proposed, 1)
        # Loop steps: a plain step per token of the longest row; a speculative one per draft.
        step_cost = (spec_s / max(spec["drafts_proposed"].max(), 1)) / (
            plain_s / plain["lengths"].max())
        print(f"| {name} | {accepted}/{proposed} ({100 * accepted / max(proposed, 1):.1f}%) | "
              f"{per_step:.2f} | {plain_tps:,.0f} | {spec_tps:,.0f} | "
              f"{spec_tps / plain_tps:.2f}x | {step_cost:.2f} | {identical} | "
              f"{plain['lengths'].mean():.1f} / {spec['lengths'].mean():.1f} |")
    print(f"\n{describe()}; median of {args.repeats} interleaved rounds after a compile call")


if __name__ == "__main__":
    main()
