"""R1-Zero in miniature: pretrain a tiny base on the embedded corpus, then pure GRPO with rule
rewards (accuracy + format), evaluating held-out pass@1 before and after.

The GRPO stage itself is `r1jax.rl.grpo_loop.run_grpo`; this module composes it with the
pretraining loop and the evaluation. Everything is resumable from the workdir.
"""

from __future__ import annotations

import dataclasses
import json
import os

from r1jax import data as rdata
from r1jax.eval.evaluate import evaluate
from r1jax.rl.grpo_loop import RLConfig, run_grpo
from r1jax.train import loop
from r1jax.train.checkpoint import load_params
from r1jax.train.experiment import ExperimentConfig

__all__ = ["R1ZeroConfig", "RLConfig", "run"]


@dataclasses.dataclass(frozen=True)
class R1ZeroConfig:
    name: str = "r1_zero"
    pretrain: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)


def run(cfg: R1ZeroConfig, workdir: str) -> dict:
    """Pretrain (or resume), evaluate, GRPO (or resume), evaluate; returns the eval results."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2, default=str)
    rl, model_cfg = cfg.rl, cfg.pretrain.model

    # --- Stage 0: the base model
    pre_dir = os.path.join(workdir, "pretrain")
    loop.run(cfg.pretrain, pre_dir)
    tok = rdata.load_or_train_tokenizer(pre_dir, vocab_size=cfg.pretrain.data.vocab_size,
                                        seed=cfg.pretrain.data.seed)
    problems = rdata.heldout_problems(rl.task, num_problems=rl.eval.num_problems,
                                      **dict(rl.task_kwargs))
    results_path = os.path.join(workdir, "eval.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}

    def record(name: str, params_fn, steps: int) -> None:
        """Evaluate once per trained length: a longer rerun of a stage is evaluated again."""
        if name not in results or results.get(f"{name}_step") != steps:
            results[name] = evaluate(model_cfg, params_fn(), tok, problems, rl.eval,
                                     max_prompt_len=rl.max_prompt_len)
            results[f"{name}_step"] = steps
            json.dump(results, open(results_path, "w"), indent=2)

    # --- Evaluate the base, GRPO, evaluate the policy
    pre_ckpt = os.path.join(pre_dir, "checkpoints")
    record("base", lambda: load_params(model_cfg, pre_ckpt, mesh=cfg.pretrain.mesh),
           cfg.pretrain.train.steps)
    policy = run_grpo(model_cfg, rl, tok, pre_ckpt, os.path.join(workdir, "grpo"),
                      mesh=cfg.pretrain.mesh, log_dir=workdir)
    record("r1_zero", lambda: policy, rl.steps)
    return results
