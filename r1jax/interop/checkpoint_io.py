"""What every Hugging Face architecture shares: config.json, tensors read by name, layouts, writing.

The architecture modules (deepseek_v3.py; qwen2.py and llama.py over dense.py) hold only their
name tables and config mapping and build on this layer; hf.py dispatches to them. Nothing here knows an architecture.

- `read_config_json`: the config.json dict, read once per load and handed to the detector and
  the parser; `check_architecture` and `require_fields` are the parsers' checks of it, whose
  errors name the file, the field and the architecture.
- `CheckpointReader`: tensors by HF name, FP8 (E4M3 + `weight_scale_inv` per 128x128 block)
  dequantized or kept as a `QuantizedArray`; it records what was read, so that a tensor the config
  does not account for is reported (`check_all_used`) instead of silently dropped.
- Layout kinds: our params keep weights (in, out) with heads as their own axis; HF stores (out, in)
  with heads flattened:
      "id"     same array
      "T"      ours (in, out)     <-> HF (out, in)
      "heads"  ours (in, H, k)    <-> HF (H * k, in)
      "o"      ours (H, v, D)     <-> HF (D, H * v)
      "bias"   ours (H, k)        <-> HF (H * k,)
- `dequantize_block_fp8` / `quantize_block_fp8`: the HF-layout faces of r1jax.nn.fp8_quant's one
  block quantizer, jitted on the host CPU. Same bits as numpy running the same math; measured on
  2 CPU cores for a 7168x2048 weight, dequantizing (every FP8 load) takes 26 ms against numpy's
  130 ms, quantizing (fp8=True saves) 130 ms against 95 ms.
- `write_checkpoint`: sharded safetensors + config.json.
"""

from __future__ import annotations

import json
import os
import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from r1jax.interop.safetensors_io import (
    SafetensorsFile,
    open_checkpoint,
    read_json_object,
    save_sharded,
)
from r1jax.nn.fp8_quant import (
    QuantizedArray,
    dequantize,
    from_weight_scale_inv,
    quantize_128x128,
    to_weight_scale_inv,
)

SAVE_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def config_json_path(source: str | os.PathLike) -> str:
    """The config.json of `source`: a checkpoint directory, or the path of the file itself."""
    return os.path.join(source, "config.json") if os.path.isdir(source) else os.fspath(source)


def read_config_json(source: str | os.PathLike) -> dict:
    """The dict in `source` (a checkpoint directory or a config.json path)."""
    path = config_json_path(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json at {path}")
    return read_json_object(path)


def config_dict_and_path(source: str | os.PathLike | dict,
                         config_path: str | None) -> tuple[dict, str]:
    """(a copy of the config.json dict, the path errors name) for a parser's `source`: a
    checkpoint directory, a config.json path, or a dict read from `config_path`."""
    if isinstance(source, dict):
        return dict(source), config_path or "config.json"
    return read_config_json(source), config_json_path(source)


def build_config(config_type: type, fields: dict, where: str, overrides: dict):
    """config_type(**fields, **overrides); values that are each valid but do not fit together
    fail in its checks, and the error then names the config.json (and any overrides)."""
    try:
        return config_type(**{**fields, **overrides})
    except ValueError as e:
        with_overrides = f" with overrides {sorted(overrides)}" if overrides else ""
        raise ValueError(f"{where}{with_overrides}: {e}") from e


def check_architecture(hf_config: dict, where: str, name: str, model_types: tuple[str, ...],
                       architectures: tuple[str, ...]) -> None:
    """Raise unless config.json (read from `where`) is one of architecture `name`: by its
    `model_type`, or, without one, by its `architectures`; a config.json with neither is taken
    to be one."""
    model_type, classes = hf_config.get("model_type"), hf_config.get("architectures") or []
    if model_type in model_types or (model_type is None and not set(classes) - set(architectures)):
        return
    shown = f"model_type={model_type!r}" if model_type is not None else f"architectures={classes!r}"
    raise ValueError(f"{where}: {shown} is not a {name} config.json (the {name} reader takes "
                     f"model_type {list(model_types)}, architectures {list(architectures)}); "
                     f"r1jax.interop.hf.load_checkpoint picks the reader from model_type")


def require_fields(hf_config: dict, fields: tuple[str, ...], where: str, name: str,
                   prefix: str = "") -> None:
    """Raise naming every field of `fields` that config.json (read from `where`) lacks or sets
    to null; `prefix` names the object they sit in (e.g. "rope_scaling.")."""
    missing = [prefix + key for key in fields if hf_config.get(key) is None]
    if missing:
        model_type = hf_config.get("model_type")
        kind = f" (model_type={model_type!r})" if model_type is not None else ""
        raise ValueError(f"{where}: missing required field(s) {missing} (absent or null) of a "
                         f"{name} config.json{kind}; copy them from the model's released "
                         f"config.json")


def read_architecture_config(source: str | os.PathLike | dict, config_path: str | None, *,
                             name: str, model_types: tuple[str, ...],
                             architectures: tuple[str, ...], known_keys: set,
                             required: tuple[str, ...]) -> tuple[dict, str]:
    """(config.json dict, the path errors name) checked as architecture `name`'s: its
    model_type/architectures, its required fields; keys outside `known_keys` are warned about."""
    hf, where = config_dict_and_path(source, config_path)
    check_architecture(hf, where, name, model_types, architectures)
    unknown = set(hf) - known_keys
    if unknown:
        warnings.warn(f"{where}: ignoring keys {sorted(unknown)}", stacklevel=3)
    require_fields(hf, required, where, name)
    return hf, where


def numpy_dtype(name: str) -> np.dtype:
    """A param dtype name ("float32", "bfloat16", ...) as a numpy dtype (bfloat16 from ml_dtypes)."""
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(name)
    except TypeError as e:
        raise ValueError(f"param_dtype={name!r} is not a dtype; use 'float32' or 'bfloat16'") from e


def save_dtype(dtype: str) -> type:
    """The numpy dtype that `save_checkpoint(dtype=...)` writes float tensors in."""
    if dtype not in SAVE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: checkpoints are written in one of {sorted(SAVE_DTYPES)}")
    return SAVE_DTYPES[dtype]


# ---------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------


def to_ours(x: np.ndarray, kind: str, shape) -> np.ndarray:
    """An HF tensor in our layout `shape` (see the module docstring for the kinds)."""
    if kind == "id":
        return x
    if kind == "bias":
        return x.reshape(shape)
    return x.T.reshape(shape)  # "T", "heads", "o": transpose, then split the flattened heads


def to_hf(x: np.ndarray, kind: str) -> np.ndarray:
    """Our param in HF's layout (the inverse of `to_ours`)."""
    if kind == "id":
        return x
    if kind == "bias":  # (H, k) -> (H*k,)
        return x.reshape(-1)
    if kind == "heads":  # (in, H, k) -> (H*k, in)
        return x.reshape(x.shape[0], -1).T
    return x.reshape(-1, x.shape[-1]).T  # "T": (in, out) -> (out, in); "o": (H, v, D) -> (D, H*v)


# ---------------------------------------------------------------------------------------------
# FP8 blocks on the host
# ---------------------------------------------------------------------------------------------


@jax.jit
def _dequantize_hf_layout(weight_fp8: jax.Array, scale_inv: jax.Array) -> jax.Array:
    return dequantize(from_weight_scale_inv(weight_fp8, scale_inv)).T  # (out, in)


@jax.jit
def _quantize_hf_layout(w: jax.Array) -> tuple[jax.Array, jax.Array]:
    return to_weight_scale_inv(quantize_128x128(w.T))  # blocks of (in, out), written as (out, in)


def _host_cpu() -> jax.Device:
    # A checkpoint's tensors are host numpy arrays: convert them on the CPU even when the default
    # backend is an accelerator, instead of a round trip through its memory.
    return jax.local_devices(backend="cpu")[0]


def dequantize_block_fp8(weight_fp8: np.ndarray, scale_inv: np.ndarray) -> np.ndarray:
    """HF `weight` (out, in) E4M3 and `weight_scale_inv` -> float32 (out, in) numpy:
    weight[o, i] * scale_inv[o // 128, i // 128] (fp8_quant's `dequantize`)."""
    with jax.default_device(_host_cpu()):
        return np.asarray(_dequantize_hf_layout(weight_fp8, scale_inv))


def quantize_block_fp8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float (out, in) -> (E4M3 `weight` (out, in), float32 `weight_scale_inv` per 128x128 block),
    scale amax/448 per block (fp8_quant's `quantize_128x128`, as the released weights)."""
    with jax.default_device(_host_cpu()):
        weight, scale_inv = _quantize_hf_layout(np.asarray(w, np.float32))
        return np.asarray(weight), np.asarray(scale_inv)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class CheckpointReader:
    """Reads HF tensors by name, dequantizing FP8 ones (or keeping them, `get_kept`), and records
    what was consumed."""

    def __init__(self, path: str):
        self.path = path
        self.where: dict[str, SafetensorsFile] = open_checkpoint(path)
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.where

    def mark_used(self, *names: str) -> None:
        """Count tensors the model does not need as consumed (e.g. copies of the embedding)."""
        self.used.update(n for n in names if n in self.where)

    def check_all_used(self) -> None:
        leftover = sorted(set(self.where) - self.used)
        if leftover:
            raise ValueError(f"{self.path}: {len(leftover)} tensors do not belong to the model "
                             f"config.json describes, e.g. {leftover[:5]}")

    def _raw(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(tensor as stored, its weight_scale_inv if it is FP8 else None)."""
        if name not in self.where:
            raise ValueError(f"{self.path}: checkpoint is missing tensor {name!r} that config.json implies")
        self.used.add(name)
        x = self.where[name].get(name)
        if x.dtype not in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
            return x, None
        if x.dtype != ml_dtypes.float8_e4m3fn:
            raise ValueError(f"{self.where[name].path}: tensor {name} is {x.dtype}; block-FP8 "
                             f"checkpoints store E4M3 (quantization_config fmt 'e4m3')")
        scale_name = name.removesuffix(".weight") + ".weight_scale_inv"
        if scale_name not in self.where:
            raise ValueError(f"{self.where[name].path}: FP8 tensor {name!r} has no {scale_name!r}")
        self.used.add(scale_name)
        return x, self.where[scale_name].get(scale_name)

    def _dequantized(self, name: str, x: np.ndarray, scale_inv: np.ndarray) -> np.ndarray:
        try:
            return dequantize_block_fp8(x, scale_inv)
        except ValueError as e:  # a scale grid that is not one per 128x128 block of the weight
            raise ValueError(f"{self.where[name].path}: {name} and its weight_scale_inv: {e}") from e

    def get(self, name: str) -> np.ndarray:
        """The tensor in HF's layout as float32 (FP8 dequantized)."""
        x, scale_inv = self._raw(name)
        return np.asarray(x, np.float32) if scale_inv is None else self._dequantized(name, x, scale_inv)

    def _check_shape(self, name: str, hf_shape, kind: str, shape) -> None:
        expected = to_hf(np.empty(shape, np.bool_), kind).shape
        if tuple(hf_shape) != expected:
            raise ValueError(f"{self.where[name].path}: tensor {name} has shape {tuple(hf_shape)}, "
                             f"but config.json implies {expected}")

    def get_shaped(self, name: str, kind: str, shape) -> np.ndarray:
        """The tensor in our layout `shape` as float32, after checking HF's shape against it."""
        x = self.get(name)
        self._check_shape(name, x.shape, kind, shape)
        return to_ours(x, kind, shape)

    def get_kept(self, name: str, kind: str, shape) -> np.ndarray | QuantizedArray:
        """An E4M3 (out, in) weight as a 128x128 QuantizedArray (in, out), its bytes and block
        scales transposed, not converted; a float tensor as `get_shaped` gives it."""
        x, scale_inv = self._raw(name)
        self._check_shape(name, x.shape, kind, shape)
        if scale_inv is None:
            return to_ours(np.asarray(x, np.float32), kind, shape)
        try:
            return from_weight_scale_inv(jnp.asarray(x), jnp.asarray(scale_inv))  # (in, out)
        except ValueError as e:
            raise ValueError(f"{self.where[name].path}: {name} and its weight_scale_inv: {e}") from e


def as_jax_params(tree: dict, dtype_name: str) -> dict:
    """Host arrays -> jax arrays of the param dtype; kept FP8 weights stay as they are."""
    dtype = numpy_dtype(dtype_name)
    return jax.tree.map(lambda x: x if isinstance(x, QuantizedArray) else jnp.asarray(np.asarray(x, dtype)),
                        tree, is_leaf=lambda x: isinstance(x, QuantizedArray))


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def host_params_and_shared_tensors(cfg, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """(params as float32 numpy, the HF tensors every decoder checkpoint has: embedding, final
    norm and, when untied, the output head)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    out = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]["scale"]}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = p["lm_head"].T
    return p, out


def write_checkpoint(tensors: dict[str, np.ndarray], hf_config: dict, path: str,
                     max_shard_bytes: int) -> None:
    """config.json + model(-0000i-of-0000n).safetensors (+ index when sharded) in `path`."""
    save_sharded(tensors, path, max_shard_bytes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
