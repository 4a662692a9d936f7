"""r1jax side by side with its peers on the same weights, ratios first.

  python experiments/bench_peers.py [--repeats 5] [--threads 1,default] [--peers hf,tunix]
                                    [--work train,generation,tunix] [--quick]

Each model is initialised by r1jax, written with `interop.hf.save_checkpoint` and read back by
HF `transformers` (the logits of both are compared first and the difference printed), then:
  - train step: DeepSeek-V3 small (4 layers, hidden 256, MLA, 8 routed experts top-2), batch
    8 x 256 tokens, forward + backward + AdamW (r1jax: the jitted sft_step; HF: loss.backward()
    and torch.optim.AdamW);
  - greedy generation of 16 prompts x (32 + 128 tokens) on the DeepSeek-V3 small model and on a
    Qwen2 small model (r1jax: the sampling engine; HF: generate(do_sample=False), every row
    running all 128 tokens on both sides).
Against Tunix (where `google-tunix` is installed, else a row says so; install it in its own
virtual environment with requirements-peers.txt): the Qwen2 small model is written the same way
and read by Tunix's Qwen2 loader, then greedy generation as above (Tunix's Sampler), a GRPO
rollout of 8 prompts x 4 samples x 64 tokens at T=1, and one GRPO iteration of 8 prompts x 4
samples x 96 tokens (rollout, reference log-probs, one update; Tunix's GRPOLearner; where its
settings differ: experiments/peers/tunix_rows.py).

Each thread setting runs in a fresh process ("1": the process pinned to one core, torch at one
thread; "default": each library's own choice), the two sides interleaved, medians of
`--repeats` after a warm-up call (the first r1jax call, compile included, is printed too).
`--work` restricts the rows (train: the DeepSeek-V3 train step; generation: the two greedy
generation rows; tunix: the Tunix rows).

Why pinning: XLA:CPU's runtime sizes its thread pool by the process's affinity mask and runs
its thunks on that pool whatever `--xla_cpu_multi_thread_eigen` says (jax 0.11.2: the jitted
train step keeps both of 2 cores busy with that flag false), so one core is the only way to
give XLA one thread. Measured before pinning, the "1" rows compared r1jax on 2 threads with
torch on 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

WORK = ("train", "generation", "tunix")


def one_core() -> None:
    """Pin the child (before it starts) to the lowest core this process may use."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_setting(threads: str, args) -> list[dict]:
    """Run the measurements in a child process with the thread setting in its environment."""
    env = dict(os.environ)
    if threads == "1":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "experiments.peers.measure", "--threads", threads,
           "--repeats", str(args.repeats), "--peers", args.peers, "--work", args.work]
    cmd += ["--quick"] if args.quick else []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                         preexec_fn=one_core if threads == "1" else None)
    if out.returncode != 0:
        raise SystemExit(f"bench_peers: the {threads}-thread run failed:\n{out.stderr[-4000:]}")
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,default", help="comma-separated: 1 and/or default")
    parser.add_argument("--peers", default="hf,tunix", help="comma-separated: hf and/or tunix")
    parser.add_argument("--work", default=",".join(WORK), help="comma-separated: " + ", ".join(WORK))
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    args = parser.parse_args()
    single_process_only("experiments/bench_peers.py")
    settings = [t for t in args.threads.split(",") if t]
    if not settings or any(t not in ("1", "default") for t in settings):
        raise SystemExit(f"--threads={args.threads!r}: give 1, default or 1,default")
    peers = [p for p in args.peers.split(",") if p]
    if not peers or any(p not in ("hf", "tunix") for p in peers):
        raise SystemExit(f"--peers={args.peers!r}: give hf, tunix or hf,tunix")
    work = [w for w in args.work.split(",") if w]
    if not work or any(w not in WORK for w in work):
        raise SystemExit(f"--work={args.work!r}: give a comma-separated subset of {','.join(WORK)}")
    rows = [row for t in settings for row in run_setting(t, args)]
    print("| work | threads | r1jax vs peer | r1jax (s) | peer (s) | peer | r1jax first call (s) |")
    print("|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        if r.get("skipped"):
            print(f"| {r['work']} | {r['threads']} | not run | | | {r['peer']} | |")
            continue
        print(f"| {r['work']} | {r['threads']} | **{r['peer_s'] / r['ours_s']:.2f}x** | "
              f"{r['ours_s']:.3f} | {r['peer_s']:.3f} | {r['peer']} | {r['first_s']:.1f} |")
    from r1jax.eval.machine import describe

    print(f"\n{describe(('jax', 'flax', 'torch', 'transformers', 'google-tunix'))}")
    for r in rows:
        if "max_logit_diff" in r:
            same = ("" if "same_tokens" not in r else
                    "; greedy tokens " + ("identical" if r["same_tokens"] else "DIFFER"))
            print(f"{r['work']} ({r['threads']} threads): max |logit difference| r1jax vs "
                  f"{r['peer']} {r['max_logit_diff']:.1e}{same}")


if __name__ == "__main__":
    main()
