"""Typed experiment configs, `--config path.py:arg` loading and `--config.a.b=value` overrides.

A recipe in configs/ is a Python file with `get_config(arg) -> ExperimentConfig` (or any nested
frozen dataclass). Overrides are parsed with the type of the field they set; an unknown key fails
with the list of valid keys at that level.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import types
import typing

from r1jax.config import ModelConfig, tiny
from r1jax.data.layouts import FieldMap
from r1jax.field_checks import at_least, between, check_fields, one_of, positive
from r1jax.sharding import MeshConfig
from r1jax.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    task: str = "corpus"  # corpus | arithmetic | countdown | a .jsonl/.parquet file | a saved dir
    mode: str = "pretrain"  # pretrain (packed rows) | sft (padded, prompt masked)
    seq_len: int = 128
    batch_size: int = 16  # global, over all processes
    vocab_size: int = 512  # requested sentencepiece vocab (trained on the embedded corpus)
    # A checkpoint directory (tokenizer.json) or a .model file; empty = train/cache one in the workdir.
    tokenizer_path: str = ""
    seed: int = 0
    corpus_tasks: tuple = ("arithmetic", "countdown")  # tasks in the pretraining corpus
    noise_rate: float = 0.3  # corpus solutions with a planted slip (so RL has something to fix)
    task_kwargs: tuple = ()  # (knob, value) pairs for the tasks, e.g. (("max_digits", 2),)
    # How processes split the global batch: "slice" = every process reads the same global stream
    # and keeps its rows (N processes see exactly the 1-process batches); "disjoint" = each process
    # reads its own shard of the examples (no duplicated reading; batches differ from 1 process).
    process_split: str = "slice"
    # A data file's fields when its layout is not recognised by their names (GSM8K, MATH and
    # r1jax's own are): --config.data.fields.prompt_field=... (r1jax/data/layouts.py).
    fields: FieldMap = dataclasses.field(default_factory=FieldMap)

    def __post_init__(self):
        check_fields(self, mode=one_of("pretrain", "sft"), seq_len=at_least(2),
                     batch_size=at_least(1), vocab_size=at_least(1), noise_rate=between(0, 1),
                     process_split=one_of("slice", "disjoint"))
        if not self.task:
            raise ValueError("DataConfig.task is empty: name a task, 'corpus' or a data file")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    log_every: int = 10
    ckpt_every: int = 100
    keep: int = 3
    async_checkpoint: bool = True
    grad_accum: int = 1
    mtp_weight: float = 0.3  # lambda [V3 §4.2: 0.3, later 0.1]
    bias_update_speed: float = 1e-3  # gamma of the aux-loss-free rule [V3 §4.2]
    seed: int = 0
    peak_tflops: float = 0.0  # device peak for MFU; 0 = do not report MFU
    init_from: str = ""  # a checkpoint directory whose params start this run (next stage)
    # A step whose loss or gradient norm is not finite is never applied. "stop": the run ends
    # with a message and a non-zero exit; "skip": the step is dropped and counted (skipped_steps).
    nonfinite: str = "stop"
    # After SIGTERM / Ctrl-C the loop saves at the end of the current step; a process stuck for
    # longer than this (a hung data pipeline, a collective) exits without a final checkpoint.
    stop_grace_s: float = 300.0

    def __post_init__(self):
        check_fields(self, steps=at_least(1), log_every=at_least(1), ckpt_every=at_least(1),
                     keep=at_least(1), grad_accum=at_least(1), mtp_weight=at_least(0),
                     bias_update_speed=at_least(0), peak_tflops=at_least(0),
                     nonfinite=one_of("stop", "skip"), stop_grace_s=positive())


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "pretrain"
    model: ModelConfig = dataclasses.field(default_factory=tiny)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    # A Hugging Face checkpoint directory (config.json, safetensors, tokenizer) this run starts
    # from: it sets the model, the starting params and the tokenizer (r1jax/train/hf_start.py).
    hf_checkpoint: str = ""


def load_config(spec: str):
    """`configs/file.py[:arg]` -> the recipe's get_config(arg). A recipe names the arguments it
    takes in `ARGS` (default: just "runlocal"); any other is refused."""
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    if not path.endswith(".py"):
        raise ValueError(f"{path} is not a recipe: give a configs/<recipe>.py file")
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise ValueError(f"recipe {path} could not be loaded: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{path} is not a recipe: it defines no get_config(arg)")
    valid = tuple(getattr(module, "ARGS", ("runlocal",)))
    if arg and arg not in valid:
        raise ValueError(f"{path}: unknown recipe argument {arg!r}; valid: {', '.join(valid)} "
                         "(or none)")
    cfg = module.get_config(arg or None)
    if not dataclasses.is_dataclass(cfg):
        raise ValueError(f"{path}: get_config returned {type(cfg).__name__}, not a config")
    return cfg


def _parse(value: str, annotation, field_path: str):
    """Parse a command-line string as the field's declared type."""
    hint = annotation
    if isinstance(hint, str):
        hint = eval(hint, vars(typing), {})  # noqa: S307 - our own annotations, not user text
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"--config.{field_path}={value!r}: choose one of {typing.get_args(hint)}")
        return value
    if hint is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--config.{field_path}={value!r}: expected true or false")
        return value.lower() in ("true", "1")
    if hint in (int, float, str):
        try:
            return hint(value)
        except ValueError:
            raise ValueError(f"--config.{field_path}={value!r}: expected {hint.__name__}") from None
    if hint is tuple or origin is tuple:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--config.{field_path}={value!r}: expected a JSON list") from None
        return tuple(tuple(x) if isinstance(x, list) else x for x in parsed)
    raise ValueError(f"--config.{field_path}: cannot set a field of type {hint} from the command line")


def apply_override(cfg, key: str, value: str, _prefix: str = ""):
    """Return cfg with the dotted `key` set to `value` (a string, parsed by the field's type)."""
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise ValueError(f"unknown config key {key!r} in {type(cfg).__name__}; "
                         f"valid keys: {sorted(fields)}")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {head!r} is {current!r}, which has no field {rest!r}")
        return dataclasses.replace(cfg, **{head: apply_override(current, rest, value, f"{_prefix}{head}.")})
    hints = typing.get_type_hints(type(cfg))
    try:
        return dataclasses.replace(cfg, **{head: _parse(value, hints[head], _prefix + key)})
    except ValueError as e:
        if str(e).startswith("--config."):
            raise
        raise ValueError(f"--config.{_prefix}{key}={value}: {e}") from None


def apply_overrides(cfg, overrides: list[str]):
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like --config.key=value")
        cfg = apply_override(cfg, key.removeprefix("--config.").removeprefix("config."), value)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
