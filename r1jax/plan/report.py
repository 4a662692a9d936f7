"""The plan of one Setup as a record (`make_plan`) and as text (`format_plan`)."""

from __future__ import annotations

from r1jax.plan.comms import collectives, compute_seconds, largest_gathered_layer, step_flops
from r1jax.plan.memory import activation_bytes, activation_terms, latent_cache_bytes, state_bytes
from r1jax.plan.setup import Setup

GiB = 2**30


def make_plan(setup: Setup) -> dict:
    """Everything from abstract shapes and shardings: nothing is allocated."""
    state = state_bytes(setup)
    acts = activation_bytes(setup)
    layer, gathered = largest_gathered_layer(setup)
    comms = collectives(setup)
    compute = compute_seconds(setup)
    comm = sum(c["seconds"] for c in comms)
    tokens = setup.batch * setup.seq
    memory = {"params": state["params"], "grads": state["grads"], "optimizer": state["optimizer"],
              "activations": acts["total"], "gathered_layer": gathered}
    memory["total"] = sum(memory.values())
    # Overlapped: collectives hide behind compute (the best case); serial: nothing overlaps.
    step = {"compute_s": compute, "comm_s": comm, "overlapped_s": max(compute, comm),
            "serial_s": compute + comm}
    gpu_hours_per_t = {k: v * setup.devices / tokens * 1e12 / 3600 for k, v in step.items()
                       if k in ("compute_s", "overlapped_s", "serial_s")}
    return {"setup": setup, "state": state, "activations": acts, "gathered_layer_name": layer,
            "memory": memory, "cache": latent_cache_bytes(setup), "collectives": comms,
            "flops": step_flops(setup), "step": step, "gpu_hours_per_trillion": gpu_hours_per_t}


def _gib(x: float) -> str:
    return f"{x / GiB:.2f} GiB"


def format_plan(plan: dict) -> str:
    s: Setup = plan["setup"]
    cfg, hw, mem = s.model, s.hardware, plan["memory"]
    m = s.mesh_sizes
    lines = [f"# Plan: mesh data={m['data']} fsdp={m['fsdp']} expert={m['expert']} "
             f"tensor={m['tensor']} ({s.devices} x {hw.name})",
             f"batch {s.batch} x {s.seq} tokens in {s.micro_batches} micro-batches "
             f"({s.tokens_per_device_micro} tokens per device each); precision {cfg.precision}, "
             f"compute {cfg.dtype}, params {cfg.param_dtype}, AdamW moments "
             f"{'bfloat16' if s.bf16_moments else 'float32'}, expert dispatch {s.dispatch}, "
             f"kernels {cfg.kernels}, rematerialisation {s.remat}", "",
             "## Memory per device", "| what | bytes |", "|---|---:|"]
    st = plan["state"]
    lines += [f"| parameters | {_gib(mem['params'])} (ideal {_gib(st['params_ideal'])} = "
              f"{_gib(st['params_total'])} / (fsdp x expert x tensor); "
              f"{mem['params'] / st['params_ideal']:.2f}x) |",
              f"| gradients | {_gib(mem['grads'])} |",
              f"| optimizer state | {_gib(mem['optimizer'])} |",
              f"| activations (all layers, one micro-batch) | {_gib(mem['activations'])} |",
              f"| largest gathered layer ({plan['gathered_layer_name']}) | "
              f"{_gib(mem['gathered_layer'])} |",
              f"| **total** | **{_gib(mem['total'])}** of {hw.memory_bytes / 1e9:.0f} GB |", ""]
    acts = plan["activations"]
    lines += ["## Activations per layer and device (one micro-batch)",
              "| layer kind | layers | per layer | largest term |", "|---|---:|---:|---|"]
    for kind, terms in activation_terms(s).items():
        big = max(terms, key=terms.get)
        lines.append(f"| {kind} | {acts['layers'][kind]} | {_gib(acts['per_layer'][kind])} | "
                     f"{big}: {terms[big] / sum(terms.values()):.0%} |")
    c = plan["cache"]
    lines += ["", f"Latent cache for decoding: {c['values_per_token_per_layer']} values per token "
              f"per layer ({c['full_kv_values_per_token_per_layer']} for materialised K/V), "
              f"{c['bytes_per_token'] / 1024:.1f} KiB per token over {cfg.num_layers} layers; "
              f"{s.decode_batch} sequences x {s.decode_context} tokens: "
              f"{_gib(c['per_device'])} per device.", "",
              "## Communication per step and device",
              "| collective | GB | seconds |", "|---|---:|---:|"]
    small = [col for col in plan["collectives"] if col["bytes"] < 1e7]
    for col in plan["collectives"]:
        if col in small:
            continue
        lines.append(f"| {col['name']} | {col['bytes'] / 1e9:.2f} | {col['seconds']:.3f} |")
    if small:
        lines.append(f"| {len(small)} collectives under 10 MB each (norm scales, biases) | | |")
    f, st_ = plan["flops"], plan["step"]
    g = plan["gpu_hours_per_trillion"]
    lines += ["", f"Compute: {f['per_token'] / 1e9:.1f} GFLOP per token "
              f"({f['activated_params'] / 1e9:.1f}B activated params), "
              f"{f['total'] / 1e15:.1f} PFLOP per device per step: {st_['compute_s']:.2f} s at "
              f"peak; collectives {st_['comm_s']:.2f} s.",
              f"Step time: {st_['overlapped_s']:.2f} s if collectives overlap compute, "
              f"{st_['serial_s']:.2f} s if not. GPU-hours per trillion tokens: "
              f"{g['compute_s'] / 1e3:.0f}K at peak compute, {g['overlapped_s'] / 1e3:.0f}K "
              f"overlapped, {g['serial_s'] / 1e3:.0f}K serial."]
    return "\n".join(lines)
