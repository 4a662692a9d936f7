"""Starting a run from a Hugging Face checkpoint directory: one field, `hf_checkpoint`.

    --config.hf_checkpoint=DIR               experiments/train.py (an ExperimentConfig)
    --config.base.hf_checkpoint=DIR          the R1 pipeline's teacher (r1jax/recipe/)
    --config.student_base.hf_checkpoint=DIR  the pipeline's student
    RLConfig(hf_checkpoint=DIR)              a GRPO run on its own (r1jax/rl/grpo_stage.py)

`start_from_hf(cfg)` is a pure function of the config and DIR's config.json (and its tensor
names): every config in `cfg` that names a checkpoint gets
  model               the checkpoint's (DeepSeek-V3, Qwen2 or Llama, `hf.read_model_config`),
                      keeping the run options no config.json holds (`hf.RUN_OPTIONS`: dtype,
                      param_dtype, precision, kernels, init_std, ...) from the config;
  train.init_from     DIR: the loop loads its safetensors onto the run's mesh, sharded
                      (`r1jax.train.checkpoint.initial_params`);
  data.tokenizer_path DIR: its tokenizer.json, special tokens and chat template.
Entry points call it once (experiments/cli.py, with the override keys so that an override
contradicting the checkpoint is refused); it returns an equal config when called again, so
library entry points call it too.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable

from r1jax.interop import hf

FIELD = "hf_checkpoint"


def start_from_hf(cfg, overridden: Iterable[str] = ()):
    """`cfg` with every config in it that sets `hf_checkpoint` taking its model, starting params
    and tokenizer from that directory. `overridden`: the dotted keys set on the command line
    (`base.model.hidden_size`); one that contradicts a checkpoint raises ValueError."""
    return _resolve(cfg, "", frozenset(overridden))


def _resolve(node, prefix: str, overridden: frozenset):
    changes = {}
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            resolved = _resolve(value, f"{prefix}{field.name}.", overridden)
            if resolved is not value:
                changes[field.name] = resolved
    node = dataclasses.replace(node, **changes) if changes else node
    if getattr(node, FIELD, ""):
        node = _from_checkpoint(node, prefix, overridden)
    return node


def _from_checkpoint(node, prefix: str, overridden: frozenset):
    directory = getattr(node, FIELD)
    flag = f"--config.{prefix}{FIELD}={directory}"
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{flag}: no such directory (give a Hugging Face checkpoint "
                                "directory: config.json, *.safetensors, tokenizer.json)")
    try:
        checkpoint_model = hf.read_model_config(directory)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{flag}: {e}") from e
    _refuse_contradictions(node, prefix, overridden, checkpoint_model, flag)
    changes = {"train": dataclasses.replace(node.train, init_from=directory)}
    if hasattr(node, "model"):
        kept = {name: getattr(node.model, name) for name in hf.RUN_OPTIONS
                if hasattr(node.model, name) and name in _field_names(checkpoint_model)}
        changes["model"] = hf.read_model_config(directory, **kept)
    if hasattr(node, "data"):
        changes["data"] = dataclasses.replace(node.data, tokenizer_path=directory)
    return dataclasses.replace(node, **changes)


def _field_names(cfg) -> set[str]:
    return {f.name for f in dataclasses.fields(cfg)}


def _refuse_contradictions(node, prefix: str, overridden: frozenset, checkpoint_model,
                           flag: str) -> None:
    """An override of what the checkpoint decides (its shapes, its tokenizer, its params) that
    differs from the checkpoint is a mistake: say which and how to fix it."""
    directory = getattr(node, FIELD)
    model_prefix = f"{prefix}model."
    for key in sorted(k for k in overridden if k.startswith(model_prefix)):
        name = key[len(model_prefix):].split(".")[0]
        if name in hf.RUN_OPTIONS:
            continue
        if name not in _field_names(checkpoint_model):
            raise ValueError(f"--config.{key} contradicts {flag}: its model is a "
                             f"{type(checkpoint_model).__name__}, which has no field {name!r}; "
                             "drop the override")
        ours, theirs = getattr(node.model, name), getattr(checkpoint_model, name)
        if ours != theirs:
            raise ValueError(f"--config.{key}={ours!r} contradicts {flag}: its config.json gives "
                             f"{name}={theirs!r}. A checkpoint's shapes come from its config.json: "
                             f"drop the override (only {', '.join(hf.RUN_OPTIONS)} may be set)")
    for key, field in ((f"{prefix}data.tokenizer_path", ("data", "tokenizer_path")),
                       (f"{prefix}train.init_from", ("train", "init_from"))):
        value = getattr(getattr(node, field[0], None), field[1], None)
        if key in overridden and value not in ("", directory):
            raise ValueError(f"--config.{key}={value} contradicts {flag}: the checkpoint's "
                             f"{'tokenizer' if field[0] == 'data' else 'params'} are those of "
                             f"{directory}; drop one of the two")
