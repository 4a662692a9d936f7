"""Run a stack of decoder layers under `jax.lax.scan`, keeping one params dict per layer.

Axis glossary: L_g layers of one run (consecutive layers of one structure), B batch, T tokens.

A Python loop over L layers traces, lowers and compiles L copies of the layer. Scanning a run of
layers of one structure lowers one layer body, whatever L_g: the model's forward + backward of
DeepSeek-V3 tiny at 8 layers falls from 9.9k to 3.4k StableHLO lines and grows ~50 lines a layer
(stacking), where the loop grew ~1.3k. What the whole train step still adds per layer is the
optimizer's per-leaf work (params stay per layer). Compile time is the backend's: XLA:CPU
compiles the unrolled tiny models about twice as fast as the scanned ones (it compiles each
distinct kernel once, so unrolled copies of a layer cost little), which is why the tiny CPU sizes
unroll (BENCHMARKS.md, "Compile time"). The scan is meant for deep models on accelerators,
where it has not been timed yet.

The params stay stored per layer (`params["layers"][i]`): what checkpoints save, what the HF
name maps, the sharding rules and FP8 kept weights address is unchanged. Inside the trace each
run's per-layer params are stacked to (L_g, ...) leaves, laid out like one layer plus an
unsplit leading `layers` dim (a sharding constraint from each weight's logical axes), and the
scan body merges one slice into an abstract layer module. The stack costs one transient copy of
the run's layer params per step; its gradient is the slice back to per-layer leaves.

Runs are found from the layers themselves (NNX graph definition, param tree, shapes and dtypes),
so DeepSeek-V3's first_k_dense dense layers and its MoE layers become two runs, and a checkpoint
whose layers differ (some weights kept in FP8, some not) splits where they differ. A run of one
layer is called directly.

Calls on a KV cache (prefill and decode in r1jax/rollout/sampling.py) stay unrolled. A scanned
decode step stacks the layers' cache buffers into the scan and slices them back out, copying the
whole cache every token where the unrolled loop writes each layer's new slot in place. Measured
with the sampler on `tiny` at 8 layers (64 rows, 32 + 64 tokens, 2 shared CPU cores): 2.6k decode
tokens/s scanned vs 9.0k unrolled. Scanning the prefill alone was as fast (9.6k), but it holds
two copies of the cache while stacking, and the sampler's compile is dominated by its decode
body anyway.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.nn.partitioning import constrain

# apply(layer, h, layer_input) -> (h, layer_output); outputs are pytrees of arrays (or None).
LayerFn = Callable[[nnx.Module, jax.Array, Any], tuple[jax.Array, Any]]


def _structure(layer: nnx.Module):
    """What two layers must share to run in one scan: graph, param tree, shapes and dtypes."""
    graphdef, state = nnx.split(layer)
    leaves, treedef = jax.tree.flatten(state)
    return graphdef, treedef, tuple((x.shape, jnp.dtype(x.dtype)) for x in leaves)


def layer_runs(layers: Sequence[nnx.Module]) -> list[range]:
    """Maximal runs of consecutive layers of one structure, in layer order."""
    runs, start, previous = [], 0, None
    for i, layer in enumerate(layers):
        current = _structure(layer)
        if i and current != previous:
            runs.append(range(start, i))
            start = i
        previous = current
    if len(layers):
        runs.append(range(start, len(layers)))
    return runs


def _stack_variables(*variables: nnx.Variable) -> nnx.Variable:
    """One variable of the run: the layers' values stacked to (L_g, ...), kept laid out like one
    layer's weight with the leading dim unsplit (FP8 kept weights, replicated, stay as XLA puts
    them)."""
    value = jax.tree.map(lambda *x: jnp.stack(x), *(v.get_value() for v in variables))
    axes = variables[0].get_metadata().get("axes")
    if isinstance(value, jax.Array) and axes is not None and value.ndim == len(axes) + 1:
        value = constrain(value, ("layers", *axes))  # (L_g, ...)
    return variables[0].replace(value)


def _scan_run(layers: Sequence[nnx.Module], apply: LayerFn, h: jax.Array, inputs: list):
    """h after the run's layers and their outputs, one pytree per layer, through one scan."""
    graphdef, _ = nnx.split(layers[0])
    states = [nnx.split(layer)[1] for layer in layers]
    stacked = jax.tree.map(_stack_variables, *states, is_leaf=lambda x: isinstance(x, nnx.Variable))
    stacked_inputs = jax.tree.map(lambda *x: jnp.stack(x), *inputs)  # leaves (L_g, ...)

    def body(h, layer_and_input):
        state, layer_input = layer_and_input
        return apply(nnx.merge(graphdef, state), h, layer_input)

    h, outputs = jax.lax.scan(body, h, (stacked, stacked_inputs))  # output leaves (L_g, ...)
    return h, [jax.tree.map(lambda y, j=j: y[j], outputs) for j in range(len(layers))]


def run_layers(layers: Sequence[nnx.Module], apply: LayerFn, h: jax.Array,
               inputs: Sequence | None = None, *, scan: bool) -> tuple[jax.Array, list]:
    """h (B, T, D) through every layer in order, and each layer's output in layer order.

    `apply(layer, h, layer_input)` runs one layer; `inputs` holds one pytree per layer (e.g. its
    cache buffers), None for none. With `scan`, each run of two or more layers of one structure
    is one `jax.lax.scan`; without, a Python loop (the reference the scan is tested against).
    """
    inputs = [None] * len(layers) if inputs is None else list(inputs)
    if len(inputs) != len(layers):
        raise ValueError(f"{len(inputs)} layer inputs for {len(layers)} layers")
    outputs = []
    for run in (layer_runs(layers) if scan else [range(i, i + 1) for i in range(len(layers))]):
        if len(run) == 1:
            h, output = apply(layers[run.start], h, inputs[run.start])
            run_outputs = [output]
        else:
            h, run_outputs = _scan_run([layers[i] for i in run], apply, h,
                                       [inputs[i] for i in run])
        outputs.extend(run_outputs)
    return h, outputs


def scan_this_call(enabled: bool, cache) -> bool:
    """Whether a forward scans its layers: when the config enables it (`scan_layers`) and no
    cache is given (training, scoring). Calls on a cache stay unrolled, see the module docstring."""
    return enabled and cache is None
