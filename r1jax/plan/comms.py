"""Bytes each collective moves per device per training step, FLOPs per device, and the times
they take at the hardware's link and GEMM rates.

Axis glossary: n tokens per device per micro-batch, D hidden, K experts per token, ep/tp/dp the
expert/tensor/data axis sizes, g the size of a weight's FSDP group.

Per weight (from its real NamedSharding, r1jax/sharding.py): the mesh axes splitting it that
the computation does not keep split are its FSDP group g: every axis but `tensor` (heads and
hidden units stay split: tensor parallelism) and `expert` on the routed experts' E dim (expert
parallelism). Per micro-batch the weight is all-gathered for the forward and again for the
backward pass (ZeRO-3: nothing gathered is kept between them), in the compute dtype, and its
gradient reduce-scattered over g in the param dtype: each moves (g-1)/g of the gathered
tensor. Over `data` (whole replicas) the gradient shard is all-reduced (2(dp-1)/dp of it).
Routed experts, per MoE layer and micro-batch, forward + backward (moe_dispatch.py):
  all_gather: tokens all-gathered over `expert` and outputs psum-scattered back, and the
    transposes in backward: 4 (ep-1) n D values.
  all_to_all: each token goes to the shards of its K experts and comes back: 4 n K D (ep-1)/ep.
    Across nodes V3 sends a token once per node (at most topk_group nodes) and forwards it
    over NVLink [V3 §3.2.2]: 4 n topk_group D over InfiniBand, 4 n K D over NVLink.
  tensor: one all-reduce of n D after attention and one after the FFN, forward and backward.
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh

from r1jax import models
from r1jax.models.counting import count_params, train_flops_per_token
from r1jax.plan.hardware import axis_within_node, link_rate
from r1jax.plan.setup import Setup
from r1jax.sharding import MESH_AXES, shardings_like


def _spec_axes(entry) -> tuple[str, ...]:
    return () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))


def weight_gathers(setup: Setup) -> list[dict]:
    """Per param: its layer group, FSDP group axes, gathered bytes (compute dtype) and gradient
    shard bytes (param dtype)."""
    return _weight_gathers(setup.model, setup.mesh)


@functools.lru_cache(maxsize=8)
def _weight_gathers(cfg, mesh: tuple[int, ...]) -> list[dict]:
    m = dict(zip(MESH_AXES, mesh))
    b = jnp.dtype(cfg.dtype).itemsize
    params = models.abstract_params(cfg)
    axes = models.param_axes(cfg)
    shardings = shardings_like(params, axes, AbstractMesh(mesh, MESH_AXES))
    flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
    rows = []
    for (path, leaf), logical, sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                               flat_axes, jax.tree.leaves(shardings)):
        gather, kept = [], 1
        for name, entry in zip(logical, sharding.spec):
            for axis in _spec_axes(entry):
                if axis == "tensor" or (axis == "expert" and name == "expert"):
                    kept *= m[axis]
                else:
                    gather.append(axis)
        gather = sorted(gather, key=MESH_AXES.index)
        key = jax.tree_util.keystr(path)
        layer = re.match(r"\['(layers|mtp)'\]\[(\d+)\]", key)
        elements = math.prod(leaf.shape) / kept
        rows.append({"path": key, "layer": layer.group(0) if layer else "embedding/head",
                     "gather_axes": tuple(gather), "group": math.prod(m[a] for a in gather),
                     "gathered_bytes": elements * b,
                     "grad_shard_bytes": elements * leaf.dtype.itemsize / math.prod(
                         m[a] for a in gather)})
    return rows


def _collective(name, bytes_moved, rate):
    return {"name": name, "bytes": bytes_moved, "seconds": bytes_moved / rate}


def collectives(setup: Setup) -> list[dict]:
    """Per-device bytes and seconds of each collective kind over one whole step."""
    cfg, m, hw = setup.model, setup.mesh_sizes, setup.hardware
    b = jnp.dtype(cfg.dtype).itemsize
    micro, n, d = setup.micro_batches, setup.tokens_per_device_micro, cfg.hidden_size
    out = []
    by_group = {}
    for w in weight_gathers(setup):
        if w["group"] > 1 and w["gathered_bytes"]:
            by_group.setdefault(w["gather_axes"], []).append(w)
    for group_axes, ws in sorted(by_group.items()):
        g = ws[0]["group"]
        rate = link_rate(hw, m, group_axes)
        gathered = sum(w["gathered_bytes"] for w in ws) * (g - 1) / g
        grads = sum(w["grad_shard_bytes"] for w in ws) * (g - 1)
        label = "x".join(group_axes)
        out.append(_collective(f"FSDP all-gather of weights over {label} (fwd + bwd)",
                               2 * micro * gathered, rate))
        out.append(_collective(f"FSDP reduce-scatter of gradients over {label}", micro * grads, rate))
    dp = m["data"]
    if dp > 1:
        shard = sum(w["grad_shard_bytes"] for w in weight_gathers(setup))
        out.append(_collective("data-parallel all-reduce of gradients over data",
                               micro * 2 * (dp - 1) / dp * shard, link_rate(hw, m, ["data"])))
    ep, moe_layers = m["expert"], cfg.num_moe_layers + cfg.num_mtp_modules
    k = cfg.num_experts_per_tok
    if ep > 1 and moe_layers:
        if setup.dispatch == "all_gather":
            values = 4 * (ep - 1) * n * d * b + (ep - 1) * n * k * 8  # + routing weights, ids
            out.append(_collective("expert all-gather + psum-scatter over expert (fwd + bwd)",
                                   micro * moe_layers * values, link_rate(hw, m, ["expert"])))
        elif axis_within_node(m, "expert", hw.gpus_per_node):
            out.append(_collective("expert all-to-all over expert (fwd + bwd), NVLink",
                                   micro * moe_layers * 4 * n * k * d * b * (ep - 1) / ep,
                                   hw.nvlink_bytes_per_s))
        else:
            nodes = min(ep, cfg.topk_group)
            out.append(_collective(f"expert all-to-all across nodes, one copy per node (<= {nodes})",
                                   micro * moe_layers * 4 * n * nodes * d * b, hw.ib_bytes_per_s))
            out.append(_collective("expert all-to-all forwarding inside nodes, NVLink",
                                   micro * moe_layers * 4 * n * k * d * b, hw.nvlink_bytes_per_s))
    tp = m["tensor"]
    if tp > 1:
        layers = cfg.num_layers + cfg.num_mtp_modules
        out.append(_collective("tensor-parallel all-reduce of activations over tensor",
                               micro * layers * 4 * 2 * (tp - 1) / tp * n * d * b,
                               link_rate(hw, m, ["tensor"])))
    return out


def largest_gathered_layer(setup: Setup) -> tuple[str, float]:
    """The layer whose FSDP-gathered weights take the most bytes at once (a transient)."""
    per_layer = {}
    for w in weight_gathers(setup):
        per_layer[w["layer"]] = per_layer.get(w["layer"], 0.0) + w["gathered_bytes"]
    return max(per_layer.items(), key=lambda kv: kv[1])


def step_flops(setup: Setup) -> dict[str, float]:
    """Per-device training FLOPs of one step as MFU counts them (models.counting), split into
    what runs on the FP8 GEMMs under precision fp8_v3 (the linear layers) and what V3 keeps in
    BF16 (attention, the output heads) [V3 §3.3]."""
    cfg = setup.model
    tokens = setup.batch * setup.seq / setup.devices
    per_token = train_flops_per_token(cfg, setup.seq)
    heads = 1 + cfg.num_mtp_modules
    attention = 3 * (cfg.num_layers + cfg.num_mtp_modules) * cfg.num_heads * (
        cfg.qk_head_dim + cfg.v_head_dim) * setup.seq
    head = 6 * cfg.hidden_size * cfg.vocab_size * heads
    linear = per_token - attention - head
    return {"per_token": per_token, "activated_params": count_params(cfg)["activated"],
            "linear": linear * tokens, "bf16_only": (attention + head) * tokens,
            "total": per_token * tokens}


def compute_seconds(setup: Setup) -> float:
    """Time of one step's FLOPs at the dense peak rates (a lower bound)."""
    f, hw = step_flops(setup), setup.hardware
    linear_rate = hw.fp8_flops_per_s if setup.model.precision.startswith("fp8") else hw.bf16_flops_per_s
    return f["linear"] / linear_rate + f["bf16_only"] / hw.bf16_flops_per_s
