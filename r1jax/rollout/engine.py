"""One rollout: sample G completions per prompt on the latent cache, bring them to the host,
decode them. Evaluation, GRPO and rejection sampling all draw their samples here.

With a mesh, the prompts are spread over the batch axes (replicated where the batch does not
divide them), sampling runs under `jax.set_mesh(mesh)` (activation shardings, expert
parallelism), and every process receives the whole rollout: rewards and verdicts are host Python,
computed identically on every process.

Axis glossary: B prompts, G samples per prompt, R = B*G rows (prompt-major), P prompt length,
N new tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np
from jax.experimental import multihost_utils

from r1jax.rollout.prompts import decode_completions
from r1jax.rollout.sampling import SamplingConfig, sample
from r1jax.sharding import batch_sharding, batch_shards, global_array, replicated


@dataclasses.dataclass(frozen=True)
class Rollout:
    """Host arrays of one rollout, rows prompt-major: row i is sample i % G of prompt i // G."""

    prompt_tokens: np.ndarray  # (R, P) int32, each prompt repeated G times
    prompt_mask: np.ndarray  # (R, P) bool
    tokens: np.ndarray  # (R, N) int32, 0 after a row stopped
    logprobs: np.ndarray  # (R, N) float32, the sampler's log pi(token) at temperature 1
    mask: np.ndarray  # (R, N) bool, generated tokens (the stop token included)
    lengths: np.ndarray  # (R,) int32
    texts: list  # R decoded completions, without EOS
    examples: list  # R example dicts (each prompt's, repeated G times)
    group_size: int

    def first_prompts(self, n: int) -> "Rollout":
        """The rows of the first n prompts (drops a padded batch's filler prompts)."""
        rows = n * self.group_size
        arrays = {f.name: getattr(self, f.name)[:rows] for f in dataclasses.fields(self)
                  if f.name != "group_size"}
        return Rollout(**arrays, group_size=self.group_size)


def _on_mesh(x: np.ndarray, mesh, *, rows_sharded: bool = True) -> jax.Array:
    """Host value x (the same on every process) on the mesh: rows over the batch axes when they
    divide them, else replicated."""
    split = rows_sharded and x.shape[0] % batch_shards(mesh) == 0
    return global_array(x, batch_sharding(mesh) if split else replicated(mesh))


def _to_host(tree):
    """Whole arrays on every process (gathered across processes when they are spread)."""
    def whole(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(whole, tree)


def generate(model_cfg, params, tok, batch: dict, sampling: SamplingConfig, key: jax.Array, *,
             mesh=None) -> Rollout:
    """Sample `sampling.num_samples` completions for every prompt of `batch` (a prompt batch:
    `prompt_tokens` (B, P), `prompt_mask` (B, P), `examples`). Generation of a row stops at the
    tokenizer's EOS (and at `sampling.stop_ids`)."""
    g = sampling.num_samples
    scfg = dataclasses.replace(sampling, stop_ids=tuple(sorted({*sampling.stop_ids, tok.eos_id})))
    tokens = np.asarray(batch["prompt_tokens"], np.int32)  # (B, P)
    mask = np.asarray(batch["prompt_mask"], bool)
    key_data = np.asarray(jax.random.key_data(key))
    if mesh is not None:
        tokens, mask = _on_mesh(tokens, mesh), _on_mesh(mask, mesh)
        key_data = _on_mesh(key_data, mesh, rows_sharded=False)
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        out = sample(model_cfg, scfg, params, tokens, mask, jax.random.wrap_key_data(key_data))
    out = _to_host(out)
    examples = [ex for ex in batch["examples"] for _ in range(g)]
    return Rollout(prompt_tokens=np.repeat(np.asarray(batch["prompt_tokens"], np.int32), g, 0),
                   prompt_mask=np.repeat(np.asarray(batch["prompt_mask"], bool), g, 0),
                   tokens=out["tokens"], logprobs=out["logprobs"], mask=out["mask"],
                   lengths=out["lengths"], texts=decode_completions(tok, out["tokens"], out["lengths"]),
                   examples=examples, group_size=g)
