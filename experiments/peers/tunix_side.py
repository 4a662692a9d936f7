"""The Tunix side of experiments/bench_peers.py: Tunix's Qwen2, sampler and GRPO learner on the
safetensors directory r1jax wrote. Imported only where `google-tunix` is installed
(requirements-peers.txt).

Tunix 0.1.7's API, as used here: `tunix.models.qwen2.params.create_model_from_safe_tensors`
reads the HF-named tensors into its NNX Qwen2; `tunix.generate.sampler.Sampler` prefills and
decodes with a KV cache in one jitted while loop; `tunix.rl.grpo.grpo_learner.GRPOLearner` on an
`RLCluster` (actor, reference and the "vanilla" rollout, i.e. that same Sampler) does one GRPO
iteration as rollout -> rewards -> group advantages -> reference log-probs
(`_generate_and_compute_advantage`) and then the actor trainer's jitted train step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tunix.generate import sampler as tunix_sampler
from tunix.models.qwen2 import model as tunix_qwen2
from tunix.models.qwen2 import params as tunix_qwen2_params
from tunix.rl import rl_cluster
from tunix.rl.grpo import grpo_learner
from tunix.rl.rollout import base_rollout

from experiments.peers.common import even_token_share
from experiments.peers.tunix_inputs import IdTokenizer, as_texts, tunix_qwen2_fields


def single_device_mesh() -> jax.sharding.Mesh:
    """Tunix's axis names on one device. The axes must be Auto: Tunix's trainer places the
    optimizer state with `with_sharding_constraint`, which rejects Explicit axes."""
    return jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def load_qwen2(directory: str, cfg, mesh: jax.sharding.Mesh | None = None):
    """Tunix's Qwen2 (float32) from the config.json + safetensors of `hf.save_checkpoint`."""
    tunix_cfg = tunix_qwen2.ModelConfig(**tunix_qwen2_fields(cfg))
    return tunix_qwen2_params.create_model_from_safe_tensors(directory, tunix_cfg, mesh=mesh)


def forward_logits(model, tokens: np.ndarray) -> np.ndarray:
    """(B, T) ids -> (B, T, V) logits of a whole-sequence causal forward (no cache)."""
    rows, length = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(length), (rows, length))
    causal = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), bool)), (rows, length, length))
    logits, _ = model(jnp.asarray(tokens), positions, None, causal)
    return np.asarray(logits)


class Generator:
    """Tunix's Sampler on fixed shapes: (R, P) prompt ids -> (R, N) new ids, every row running
    all N tokens (greedy with temperature 0, else plain sampling at that temperature)."""

    def __init__(self, model, cfg, prompt_len: int, new_tokens: int):
        self.tok = IdTokenizer(cfg.vocab_size)
        self.prompt_len, self.new_tokens = prompt_len, new_tokens
        cache = tunix_sampler.CacheConfig(cache_size=prompt_len + new_tokens,
                                          num_layers=cfg.num_layers,
                                          num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
        self.sampler = tunix_sampler.Sampler(model, self.tok, cache)

    def __call__(self, prompt_tokens: np.ndarray, *, temperature: float = 0.0,
                 seed: int = 0) -> np.ndarray:
        # top_p=1.0 and no top_k: Tunix then draws from the full softmax, skipping the sort, as
        # r1jax does at top_p=1.
        sampling = {} if temperature == 0 else {"temperature": temperature, "top_p": 1.0,
                                                "seed": seed}
        out = self.sampler(as_texts(prompt_tokens), max_generation_steps=self.new_tokens,
                           max_prompt_length=self.prompt_len, eos_tokens=[self.tok.eos_id()],
                           **sampling)
        return np.stack(out.tokens)


def tunix_optimizer(lr: float, weight_decay: float, grad_clip: float, b2: float):
    """optax AdamW as r1jax's OptimConfig builds it at a constant learning rate."""
    return optax.chain(optax.clip_by_global_norm(grad_clip),
                       optax.adamw(lr, b1=0.9, b2=b2, eps=1e-8, weight_decay=weight_decay))


class GRPORun:
    """Tunix's GRPOLearner on a Qwen2 directory: `step(prompts)` is one GRPO iteration.

    The learner's public `train()` runs this same work on a producer thread behind a data queue,
    with metric writers and checkpointing; `step` calls the two halves directly so the time is
    the step's own work: the rollout and advantages (`_generate_and_compute_advantage`), then the
    actor's jitted train step (forward, backward, optimizer update).
    """

    def __init__(self, directory: str, cfg, *, prompts: int, samples: int, prompt_len: int,
                 new_tokens: int, optimizer, kl_beta: float, clip_eps: float):
        self.samples, self.tok = samples, IdTokenizer(cfg.vocab_size)
        self.mesh = single_device_mesh()
        with self.mesh:
            actor = load_qwen2(directory, cfg, self.mesh)
            reference = load_qwen2(directory, cfg, self.mesh)
        roles = {role: self.mesh for role in (rl_cluster.Role.ACTOR, rl_cluster.Role.REFERENCE,
                                              rl_cluster.Role.ROLLOUT)}
        rollout = base_rollout.RolloutConfig(
            max_tokens_to_generate=new_tokens, max_prompt_length=prompt_len,
            kv_cache_size=prompt_len + new_tokens, temperature=1.0, top_p=1.0, top_k=None,
            eos_tokens=[self.tok.eos_id()])
        # Micro-batches of all the prompts: the rollout and the reference log-probs run as one
        # batch of prompts x samples rows, as on the r1jax side.
        training = rl_cluster.RLTrainingConfig(
            actor_optimizer=optimizer, eval_every_n_steps=10**9, max_steps=10**9,
            rollout_micro_batch_size=prompts, compute_logps_micro_batch_size=prompts)
        self.cluster = rl_cluster.RLCluster(
            actor=actor, reference=reference, tokenizer=self.tok,
            cluster_config=rl_cluster.ClusterConfig(role_to_mesh=roles, rollout_engine="vanilla",
                                                    training_config=training,
                                                    rollout_config=rollout))
        # kl_loss_mode "low_var_kl" is the k3 estimator r1jax uses; the default "kl" is log-ratio.
        algo = grpo_learner.GRPOConfig(num_generations=samples, num_iterations=1, beta=kl_beta,
                                       epsilon=clip_eps, kl_loss_mode="low_var_kl")
        self.learner = grpo_learner.GRPOLearner(rl_cluster=self.cluster, algo_config=algo,
                                                reward_fns=[self._reward])
        with self.mesh:
            self.train_step, _ = self.cluster.actor_trainer.jit_train_and_eval_step(
                cache_nnx_graph=True)

    def _reward(self, prompts, completions, **_) -> list[float]:
        return even_token_share(np.array([self.tok.encode(c) for c in completions])).tolist()

    def step(self, prompt_tokens: np.ndarray) -> float:
        """One GRPO iteration on (B, P) prompts (each sampled `samples` times); the loss."""
        # The learner expects each prompt repeated G times, as its data pipeline does.
        texts = as_texts(np.repeat(prompt_tokens, self.samples, axis=0))
        with self.mesh:
            example = self.learner._generate_and_compute_advantage({"prompts": texts})
            loss, _, _ = self.train_step(example)
        return float(loss)
