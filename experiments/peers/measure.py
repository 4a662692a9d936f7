"""One thread setting of experiments/bench_peers.py: prints the rows as one JSON line.

The thread environment (the one-core affinity, OMP_NUM_THREADS) is set by the parent before
this process starts; torch's pools are set here, before any work.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from experiments.peers.common import (QUICK, Shapes, deepseek_small, interleaved, qwen2_small,
                                      random_prompts)
from r1jax import models
from r1jax.interop import hf
from r1jax.rollout.sampling import SamplingConfig, sample
from r1jax.sharding import MeshConfig, make_mesh
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.state import create_sharded_state
from r1jax.train.steps import sft_step_fn


def same_weights(cfg, params, directory: str):
    """The HF model of r1jax's params, and the largest logit difference on one batch."""
    hf.save_checkpoint(cfg, params, directory)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokens = random_prompts(cfg.vocab_size, 2, 24, seed=1)
    ours = np.asarray(models.forward(cfg, params, jnp.asarray(tokens), with_mtp=False)[0])
    with torch.no_grad():
        theirs = model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
    return model, float(np.max(np.abs(ours - theirs)))


def train_step(cfg, shapes: Shapes, repeats: int) -> dict:
    tx = make_optimizer(OptimConfig(lr=1e-4), 1000, models.param_roles(cfg))
    mesh = make_mesh(MeshConfig())
    with jax.set_mesh(mesh):
        state, _ = create_sharded_state(cfg, tx, mesh, jax.random.key(0))
    tokens = np.random.default_rng(0).integers(
        1, cfg.vocab_size, (shapes.train_batch, shapes.train_seq + 1)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "loss_mask": np.ones((shapes.train_batch, shapes.train_seq), bool)}
    step = jax.jit(sft_step_fn(cfg, tx), donate_argnums=0)
    with tempfile.TemporaryDirectory() as d:
        model, diff = same_weights(cfg, state.params, d)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = torch.as_tensor(tokens, dtype=torch.long)
    holder = {"state": state}

    def ours():
        holder["state"], metrics = step(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    def peer():
        opt.zero_grad()
        model(input_ids=inputs, labels=inputs).loss.backward()
        opt.step()

    first, ours_s, peer_s = interleaved(ours, peer, repeats)
    return {"first_s": first, "ours_s": ours_s, "peer_s": peer_s, "max_logit_diff": diff}


def generation(cfg, shapes: Shapes, repeats: int) -> dict:
    params = models.init(cfg, jax.random.key(0))
    prompt = random_prompts(cfg.vocab_size, shapes.gen_rows, shapes.gen_prompt)
    mask = np.ones_like(prompt, dtype=bool)
    scfg = SamplingConfig(max_new_tokens=shapes.gen_new, greedy=True)  # no stop id: every row
    with tempfile.TemporaryDirectory() as d:  # runs all the new tokens
        model, diff = same_weights(cfg, params, d)
    model.eval()
    inputs = torch.as_tensor(prompt, dtype=torch.long)

    out = {}

    def ours():
        out["ours"] = sample(cfg, scfg, params, prompt, mask, jax.random.key(0))["tokens"]
        jax.block_until_ready(out["ours"])

    def peer():
        with torch.no_grad():
            out["peer"] = model.generate(
                inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                max_new_tokens=shapes.gen_new, min_new_tokens=shapes.gen_new, pad_token_id=0)

    first, ours_s, peer_s = interleaved(ours, peer, repeats)
    same = np.array_equal(np.asarray(out["ours"]), out["peer"][:, shapes.gen_prompt:].numpy())
    return {"first_s": first, "ours_s": ours_s, "peer_s": peer_s, "max_logit_diff": diff,
            "same_tokens": bool(same)}


def hf_rows(shapes: Shapes, repeats: int, work: list[str]) -> list[tuple[str, str, object]]:
    """(work, peer, measure) of the HF transformers rows of the kinds in `work`."""
    s = shapes
    train = [
        (f"DeepSeek-V3 small train step {s.train_batch}x{s.train_seq}", "HF transformers",
         lambda: train_step(deepseek_small(), shapes, repeats)),
    ]
    generate = [
        (f"DeepSeek-V3 small greedy generation {s.gen_rows} x ({s.gen_prompt} + {s.gen_new})",
         "HF transformers", lambda: generation(deepseek_small(), shapes, repeats)),
        (f"Qwen2 small greedy generation {s.gen_rows} x ({s.gen_prompt} + {s.gen_new})",
         "HF transformers", lambda: generation(qwen2_small(), shapes, repeats)),
    ]
    return ((train if "train" in work else []) + (generate if "generation" in work else []))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peers", default="hf,tunix")
    parser.add_argument("--work", default="train,generation,tunix")
    args = parser.parse_args()
    if args.threads == "1":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    shapes = QUICK if args.quick else Shapes()
    peers, kinds = args.peers.split(","), args.work.split(",")
    work = hf_rows(shapes, args.repeats, kinds) if "hf" in peers else []
    not_run = []
    if "tunix" in peers and "tunix" in kinds:
        if importlib.util.find_spec("tunix") is None:
            not_run = [{"work": name, "threads": args.threads, "skipped": True,
                        "peer": "Tunix (google-tunix not installed)"}
                       for name in ("Qwen2 small sampler", "GRPO rollout and step")]
        else:  # only here: the module imports tunix
            from experiments.peers import tunix_rows

            work += tunix_rows.rows(shapes, args.repeats)
    rows = []
    for name, peer, measure in work:
        print(f"measuring {name} vs {peer} ({args.threads} threads)", file=sys.stderr, flush=True)
        rows.append({"work": name, "threads": args.threads, "peer": peer, **measure()})
    print(json.dumps(rows + not_run))


if __name__ == "__main__":
    main()
