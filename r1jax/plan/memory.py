"""Bytes one device holds: training state (from the real shardings), activations, latent cache.

Axis glossary: n tokens per device per micro-batch, D hidden, H heads, Q q_lora_rank,
C kv_lora_rank, N/R/V nope/rope/value head dims, S keys per query (= seq in training), E routed
experts, K experts per token, F expert hidden, I dense hidden, ep/tp the expert/tensor axes.

Parameters, gradients and optimizer state are measured, not modelled: `jax.eval_shape` of the
train state's init (r1jax/train/state.py, the optimizer of r1jax/train/optim.py) and the
NamedShardings the training loop would use, on a `jax.sharding.AbstractMesh`.

Activations are modelled: the code has no rematerialisation (no jax.checkpoint anywhere), so
the backward pass keeps every intermediate below. Each term is what one token adds to one layer
(`activation_terms`), in the compute dtype unless marked float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh

from r1jax import models
from r1jax.plan.setup import Setup
from r1jax.sharding import MESH_AXES
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.state import state_shardings

F32 = 4


def _device_bytes(abstract_tree, shardings) -> int:
    leaves = jax.tree.leaves(abstract_tree)
    return sum(math.prod(s.shard_shape(a.shape)) * a.dtype.itemsize
               for a, s in zip(leaves, jax.tree.leaves(shardings)))


def state_bytes(setup: Setup) -> dict[str, float]:
    """Per-device bytes of params, gradients and optimizer state, and the params' total and
    "ideal" (total / (fsdp x expert x tensor): `data` holds whole replicas by design)."""
    params, optimizer, total = _sharded_state_bytes(setup.model, setup.mesh, setup.bf16_moments)
    m = setup.mesh_sizes
    # Gradients have the params' dtype and sharding; with accumulation the scan carries a sum
    # while each micro-batch's gradient is formed.
    grads = params * (2 if setup.micro_batches > 1 else 1)
    return {"params": params, "grads": grads,
            "optimizer": optimizer,
            "params_total": total, "params_ideal": total / (m["fsdp"] * m["expert"] * m["tensor"])}


@functools.lru_cache(maxsize=8)
def _sharded_state_bytes(cfg, mesh: tuple[int, ...], bf16_moments: bool) -> tuple[int, int, int]:
    """(params, optimizer state) bytes per device and the params' total bytes."""
    tx = make_optimizer(OptimConfig(bf16_moments=bf16_moments), 1, models.param_roles(cfg))
    shardings, abstract = state_shardings(cfg, tx, AbstractMesh(mesh, MESH_AXES))
    total = sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(abstract.params))
    return (_device_bytes(abstract.params, shardings.params),
            _device_bytes(abstract.opt_state, shardings.opt_state), total)


def activation_terms(setup: Setup) -> dict[str, dict[str, float]]:
    """Bytes one token adds per layer kind ("mla", "dense_ffn", "moe", "head"), term by term.

    tensor splits the head- and hidden-sized terms (heads and F on `tensor`). The attention
    probabilities depend on the kernel: XLA's einsums keep (H, S) scores and probabilities per
    query, the flash kernel (kernels="pallas") only the output and a log-sum-exp per head.
    The routed-expert buffer depends on the dispatch: the all_gather path sorts ep*n*K rows per
    device (every pair of the expert group, so none is dropped), all_to_all receives ~n*K.
    """
    cfg, m = setup.model, setup.mesh_sizes
    b = jnp.dtype(cfg.dtype).itemsize
    tp, ep = m["tensor"], m["expert"]
    d, h, s = cfg.hidden_size, cfg.num_heads / tp, setup.seq
    q, c = cfg.q_lora_rank or 0, cfg.kv_lora_rank
    n, r, v = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    if cfg.kernels == "pallas":
        scores = {"attention output + log-sum-exp (flash)": h * v * b + h * F32}
    else:
        scores = {"scores (H, S) f32 + probabilities (H, S)": h * s * (2 * F32 + b)}
    mla = {"residual + normed input (2D)": 2 * d * b,
           "q latent, normed (2Q)": 2 * q * b,
           "queries H(N+R) + rotated rope HR": h * (n + 2 * r) * b,
           "kv latent + normed + rotated rope (2C+2R)": (2 * c + 2 * r) * b,
           "keys/values H(N+V)": h * (n + v) * b,
           **scores,
           "attention output HV + projected (D)": (h * v + d) * b}
    f = cfg.moe_intermediate_size / tp
    rows = cfg.num_experts_per_tok * (ep if setup.dispatch == "all_gather" else 1)
    moe = {"residual + normed input (2D)": 2 * d * b,
           "router logits + scores f32 (2E)": 2 * cfg.n_routed_experts * F32,
           f"routed rows ({rows} per token): in D, gate/up/act 3F, out D": rows * (2 * d + 3 * f) * b,
           "shared expert gate/up/act (3F)": 3 * f * cfg.n_shared_experts * b,
           "combined output (D)": d * b}
    if setup.dispatch == "all_gather" and ep > 1:
        moe["gathered tokens of the expert group (ep*D)"] = ep * d * b
    i = cfg.intermediate_size / tp
    dense = {"residual + normed input (2D)": 2 * d * b, "gate/up/act (3I)": 3 * i * b,
             "output (D)": d * b}
    heads = 1 + cfg.num_mtp_modules
    head = {f"logits + log-softmax f32 (2V) x {heads} heads": heads * 2 * cfg.vocab_size * F32,
            "embedding output (D)": d * b}
    return {"mla": mla, "dense_ffn": dense, "moe": moe, "head": head}


def activation_bytes(setup: Setup) -> dict[str, float]:
    """Per-device activation bytes of one micro-batch: per layer kind and in total. MTP modules
    count as one more MLA + MoE layer each."""
    cfg, tokens = setup.model, setup.tokens_per_device_micro
    per_token = {kind: sum(terms.values()) for kind, terms in activation_terms(setup).items()}
    layers = {"mla": cfg.num_layers + cfg.num_mtp_modules, "dense_ffn": cfg.first_k_dense,
              "moe": cfg.num_moe_layers + cfg.num_mtp_modules, "head": 1}
    per_layer = {kind: per_token[kind] * tokens for kind in per_token}
    kept = sum(per_layer[k] * layers[k] for k in per_layer)
    if setup.remat == "block":
        # Each layer keeps its input (n, D); backward recomputes one layer at a time.
        blocks = cfg.num_layers + cfg.num_mtp_modules
        widest = per_layer["mla"] + max(per_layer["moe"], per_layer["dense_ffn"])
        kept = blocks * tokens * cfg.hidden_size * jnp.dtype(cfg.dtype).itemsize + widest + per_layer["head"]
    return {"per_layer": per_layer, "layers": layers, "total": kept}


def latent_cache_bytes(setup: Setup) -> dict[str, float]:
    """The decoding cache (c_kv + k_rope per token per layer, models.init_cache) in the compute
    dtype, split over the batch axes (data x fsdp x expert); per token and per device."""
    cfg = setup.model
    b = jnp.dtype(cfg.dtype).itemsize
    values = cfg.latent_cache_values_per_token()
    per_token = values * cfg.num_layers * b
    rows_per_device = max(1, setup.decode_batch // setup.token_shards)
    return {"values_per_token_per_layer": values,
            "full_kv_values_per_token_per_layer": cfg.full_kv_cache_values_per_token(),
            "bytes_per_token": per_token,
            "per_device": per_token * rows_per_device * setup.decode_context}
