"""Minimal safetensors reading (memory-mapped, every dtype incl. FP8) and sharded writing.

The `safetensors` package's numpy backend cannot return float8 tensors, and released DeepSeek
checkpoints are FP8, so reading parses the format directly: an 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw bytes.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np
import safetensors.numpy

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
INDEX_NAME = "model.safetensors.index.json"


class SafetensorsFile:
    """Lazy access to the tensors of one .safetensors file."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a valid safetensors file ({e})") from e
        header.pop("__metadata__", None)
        self.header, self.data_start = header, 8 + n
        self._mm = np.memmap(path, np.uint8, mode="r")

    def keys(self):
        return self.header.keys()

    def get(self, name: str) -> np.ndarray:
        info = self.header[name]
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        raw = self._mm[self.data_start + start:self.data_start + end]
        return raw.view(DTYPES[info["dtype"]]).reshape(info["shape"])


def open_checkpoint(path: str) -> dict[str, SafetensorsFile]:
    """{tensor name: file holding it} for a checkpoint directory (sharded or single-file)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    index_path = os.path.join(path, INDEX_NAME)
    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [fn for fn in files if not os.path.exists(os.path.join(path, fn))]
        if missing:
            raise FileNotFoundError(f"{index_path} lists shards that are missing: {missing}")
    else:
        files = sorted(fn for fn in os.listdir(path) if fn.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files (and no {INDEX_NAME}) in {path}")
    where = {}
    for fn in files:
        st = SafetensorsFile(os.path.join(path, fn))
        for name in st.keys():
            where[name] = st
    return where


def save_sharded(tensors: dict[str, np.ndarray], path: str, max_shard_bytes: int = 4 << 30) -> None:
    """Write `tensors` as model-0000i-of-0000n.safetensors (+ index when sharded)."""
    os.makedirs(path, exist_ok=True)
    shards, current, size = [], {}, 0
    for name, arr in tensors.items():
        if current and size + arr.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = np.ascontiguousarray(arr)
        size += arr.nbytes
    shards.append(current)
    if len(shards) == 1:
        safetensors.numpy.save_file(shards[0], os.path.join(path, "model.safetensors"),
                                    metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        safetensors.numpy.save_file(shard, os.path.join(path, fn), metadata={"format": "pt"})
        weight_map.update({name: fn for name in shard})
        total += sum(a.nbytes for a in shard.values())
    with open(os.path.join(path, INDEX_NAME), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
