"""Broken checkpoints fail with errors that name the file, the tensor or the field, and the fix.

Each test corrupts a copy of a good tiny checkpoint the way files break in practice (a download
cut short, a header overwritten, a hand-edited config.json, a shard lost) and pins the message.
The expected offsets and sizes are computed here from the raw bytes, not by the loader.
"""

import json
import math
import os
import re
import shutil
import struct

import jax
import pytest

from r1jax import config, models
from r1jax.interop import deepseek_v3_config, hf, qwen2_config
from r1jax.models import qwen2

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """{"deepseek_v3": dir, "qwen2": dir}: a sharded DeepSeek-V3 and a one-file Qwen2 checkpoint."""
    out = {}
    for name, cfg, shard_bytes in (("deepseek_v3", config.tiny(num_mtp_modules=0), 200_000),
                                   ("qwen2", qwen2.tiny(), 4 << 30)):
        out[name] = tmp_path_factory.mktemp(name)
        hf.save_checkpoint(cfg, models.init(cfg, jax.random.key(0)), str(out[name]),
                           max_shard_bytes=shard_bytes)
    return out


def copy_of(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def read_header(file):
    """(header length, header dict) of a safetensors file, read straight from its bytes."""
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n])


def replace_header(file, header_bytes):
    """Rewrite `file` with `header_bytes` as its header and its data section unchanged."""
    n, _ = read_header(file)
    data = file.read_bytes()[8 + n:]
    file.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)


def tensors_of(header):
    return {name: info for name, info in header.items() if name != "__metadata__"}


def edit_json(file, change):
    obj = json.loads(file.read_text())
    change(obj)
    file.write_text(json.dumps(obj))


# ---------------------------------------------------------------------------------------------
# safetensors files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 4])
def test_file_shorter_than_the_length_field(good, tmp_path, cut):
    ckpt = copy_of(good["qwen2"], tmp_path)
    os.truncate(ckpt / "model.safetensors", cut)
    with pytest.raises(ValueError, match=re.escape(
            f"{ckpt / 'model.safetensors'}: not a valid safetensors file: it is {cut} bytes, "
            f"shorter than the 8-byte header length")):
        hf.load_checkpoint(str(ckpt))


@pytest.mark.parametrize("where", ["header_start", "header_middle"])
def test_file_cut_in_the_header_names_both_sizes(good, tmp_path, where):
    ckpt = copy_of(good["qwen2"], tmp_path)
    file = ckpt / "model.safetensors"
    n, _ = read_header(file)
    cut = 8 if where == "header_start" else 8 + n // 2
    os.truncate(file, cut)
    with pytest.raises(ValueError, match=re.escape(
            f"{file}: not a valid safetensors file: its header length is {n} bytes, but only "
            f"{cut - 8} bytes follow")):
        hf.load_checkpoint(str(ckpt))


@pytest.mark.parametrize("fraction", [0.0, 0.5, "last_byte"])
def test_file_cut_in_the_data_names_the_tensor_and_byte_counts(good, tmp_path, fraction):
    ckpt = copy_of(good["deepseek_v3"], tmp_path)
    file = ckpt / "model-00002-of-00005.safetensors"
    n, header = read_header(file)
    size = file.stat().st_size
    data_bytes = size - 8 - n - 1 if fraction == "last_byte" else int((size - 8 - n) * fraction)
    os.truncate(file, 8 + n + data_bytes)
    spans = {name: info["data_offsets"] for name, info in tensors_of(header).items()}
    cut_off = {name: span for name, span in spans.items() if span[1] > data_bytes}
    first = min(cut_off, key=lambda name: cut_off[name][1])  # the first tensor the cut reaches
    start, end = cut_off[first]
    needed = max(end for _, end in spans.values())
    with pytest.raises(ValueError, match=re.escape(
            f"{file}: truncated: tensor '{first}' needs data bytes [{start}, {end}), but the file "
            f"holds {data_bytes} bytes of data after its header ({needed} needed; "
            f"{len(cut_off)} of {len(spans)} tensors cut off)")):
        hf.load_checkpoint(str(ckpt))


def test_absurd_header_length_names_both_sizes(good, tmp_path):
    ckpt = copy_of(good["qwen2"], tmp_path)
    file = ckpt / "model.safetensors"
    with open(file, "r+b") as f:
        f.write(struct.pack("<Q", 2**60))
    with pytest.raises(ValueError, match=re.escape(
            f"{file}: not a valid safetensors file: its header length is {2**60} bytes, but only "
            f"{file.stat().st_size - 8} bytes follow")):
        hf.load_checkpoint(str(ckpt))


def test_header_over_the_format_limit_is_not_read(good, tmp_path):
    ckpt = copy_of(good["qwen2"], tmp_path)
    file = ckpt / "model.safetensors"
    n = 100_000_001
    file.write_bytes(struct.pack("<Q", n))
    os.truncate(file, 8 + n + 1024)  # sparse: the bytes are never written
    with pytest.raises(ValueError, match=re.escape(
            f"{file}: not a valid safetensors file: its header length is {n} bytes, over the "
            f"format's limit of 100000000 bytes")):
        hf.load_checkpoint(str(ckpt))


@pytest.mark.parametrize("header,match", [
    (b"x", "its header is not valid JSON at line 1 column 1 (char 0): Expecting value"),
    (b'{"a": \xff}', "its header is not UTF-8 text (byte 6)"),
    (b"[1, 2]", "its header is a JSON array, not an object {tensor name: entry}"),
])
def test_header_that_is_not_a_json_object_names_the_file(good, tmp_path, header, match):
    ckpt = copy_of(good["qwen2"], tmp_path)
    file = ckpt / "model.safetensors"
    replace_header(file, header)
    with pytest.raises(ValueError,
                       match=re.escape(f"{file}: not a valid safetensors file: {match}")):
        hf.load_checkpoint(str(ckpt))


def _first_tensor(file):
    n, header = read_header(file)
    name = sorted(tensors_of(header))[0]
    return header, name, header[name]


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_tensor_whose_bytes_disagree_with_dtype_and_shape(good, tmp_path, change):
    ckpt = copy_of(good["qwen2"], tmp_path)
    file = ckpt / "model.safetensors"
    header, name, info = _first_tensor(file)
    start, end = info["data_offsets"]
    assert info["dtype"] == "F32"
    if change == "shape":
        info["shape"] = [info["shape"][0] + 1, *info["shape"][1:]]
    else:
        info["dtype"] = "BF16"
    nbytes = math.prod(info["shape"]) * (4 if info["dtype"] == "F32" else 2)
    replace_header(file, json.dumps(header).encode())
    with pytest.raises(ValueError, match=re.escape(
            f"{file}: tensor '{name}' is {info['dtype']} of shape {info['shape']}, "
            f"{nbytes} bytes, but its data_offsets [{start}, {end}) span {end - start} "
            f"bytes")):
        hf.load_checkpoint(str(ckpt))


@pytest.mark.parametrize("entry,match", [
    ({"dtype": "F32", "shape": [2]}, "needs 'dtype', 'shape' and 'data_offsets'"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},
     "data_offsets [8, 0] are not [start, end] with 0 <= start <= end"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
     "shape [-2] is not a list of non-negative integers"),
])
def test_malformed_header_entry_names_the_tensor(good, tmp_path, entry, match):
    ckpt = copy_of(good["qwen2"], tmp_path)
    file = ckpt / "model.safetensors"
    header, name, _ = _first_tensor(file)
    header[name] = entry
    replace_header(file, json.dumps(header).encode())
    with pytest.raises(ValueError, match=re.escape(f"{file}: tensor '{name}': {match}")):
        hf.load_checkpoint(str(ckpt))


# ---------------------------------------------------------------------------------------------
# config.json and the shard index
# ---------------------------------------------------------------------------------------------

_DROP = object()


@pytest.mark.parametrize("arch,field,value", [
    ("deepseek_v3", "kv_lora_rank", _DROP), ("deepseek_v3", "num_hidden_layers", _DROP),
    ("deepseek_v3", "n_routed_experts", None), ("qwen2", "hidden_size", _DROP),
    ("qwen2", "intermediate_size", _DROP), ("qwen2", "num_attention_heads", None),
])
def test_missing_required_field_names_field_file_and_architecture(good, tmp_path, arch, field,
                                                                  value):
    ckpt = copy_of(good[arch], tmp_path)

    def drop(hf_cfg):
        if value is _DROP:
            del hf_cfg[field]
        else:
            hf_cfg[field] = value

    edit_json(ckpt / "config.json", drop)
    name = {"deepseek_v3": "DeepSeek-V3", "qwen2": "Qwen2"}[arch]
    with pytest.raises(ValueError, match=re.escape(
            f"{ckpt / 'config.json'}: missing required field(s) ['{field}'] (absent or null) of a "
            f"{name} config.json (model_type='{arch}')")):
        hf.load_checkpoint(str(ckpt))


def test_yarn_without_its_factor_names_the_field():
    hf_cfg = deepseek_v3_config.to_hf_config(config.tiny())
    hf_cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e4,
                                 "original_max_position_embeddings": 4096}
    with pytest.raises(ValueError, match=re.escape(
            "config.json: missing required field(s) ['rope_parameters.factor'] (absent or null) "
            "of a DeepSeek-V3 config.json")):
        deepseek_v3_config.from_hf_config(hf_cfg)


@pytest.mark.parametrize("reader,name,types", [
    (deepseek_v3_config, "DeepSeek-V3", "['deepseek_v3', 'deepseek_v2']"),
    (qwen2_config, "Qwen2", "['qwen2']"),
])
@pytest.mark.parametrize("model_type", ["other", "llama", "gpt2"])
def test_config_of_another_architecture_names_the_supported_model_types(
        good, tmp_path, reader, name, types, model_type):
    own = "deepseek_v3" if reader is deepseek_v3_config else "qwen2"
    source = good["qwen2" if own == "deepseek_v3" else "deepseek_v3"]
    ckpt = copy_of(source, tmp_path)
    if model_type != "other":
        edit_json(ckpt / "config.json", lambda hf_cfg: hf_cfg.update(model_type=model_type))
    shown = json.loads((ckpt / "config.json").read_text())["model_type"]
    with pytest.raises(ValueError, match=re.escape(
            f"{ckpt / 'config.json'}: model_type={shown!r} is not a {name} config.json (the "
            f"{name} reader takes model_type {types}")):
        reader.from_hf_config(str(ckpt))


def test_config_without_model_type_dispatches_on_architectures(good, tmp_path):
    ckpt = copy_of(good["qwen2"], tmp_path)
    edit_json(ckpt / "config.json", lambda hf_cfg: hf_cfg.pop("model_type"))
    cfg, _ = hf.load_checkpoint(str(ckpt))
    assert isinstance(cfg, qwen2.Qwen2Config)
    edit_json(ckpt / "config.json",
              lambda hf_cfg: hf_cfg.update(architectures=["MistralForCausalLM"]))
    with pytest.raises(ValueError, match=re.escape(
            f"{ckpt / 'config.json'}: architectures=['MistralForCausalLM'] (and no model_type) is "
            f"not supported (supported: ['DeepseekV2ForCausalLM', 'DeepseekV3ForCausalLM', "
            f"'LlamaForCausalLM', 'Qwen2ForCausalLM'])")):
        hf.load_checkpoint(str(ckpt))


@pytest.mark.parametrize("file", ["config.json", INDEX])
@pytest.mark.parametrize("text,match", [
    (b'{"a": 1,, }', "not valid JSON at line 1 column 9 (char 8): Expecting property name"),
    (b'{\n  "a": "\xff"\n}', "not UTF-8 text (byte 10)"),
    (b"[1, 2]", "holds a JSON array, not an object"),
])
def test_json_file_that_does_not_parse_names_the_path_and_position(good, tmp_path, file, text,
                                                                    match):
    ckpt = copy_of(good["deepseek_v3"], tmp_path)
    (ckpt / file).write_bytes(text)
    with pytest.raises(ValueError, match=re.escape(f"{ckpt / file}: {match}")):
        hf.load_checkpoint(str(ckpt))


def test_index_without_a_weight_map_names_the_field(good, tmp_path):
    ckpt = copy_of(good["deepseek_v3"], tmp_path)
    edit_json(ckpt / INDEX, lambda index: index.pop("weight_map"))
    with pytest.raises(ValueError, match=re.escape(
            f"{ckpt / INDEX}: needs a non-empty 'weight_map' object {{tensor name: shard file}}")):
        hf.load_checkpoint(str(ckpt))


# ---------------------------------------------------------------------------------------------
# The checkpoint directory
# ---------------------------------------------------------------------------------------------


def test_directory_without_safetensors_names_the_directory(good, tmp_path):
    ckpt = copy_of(good["deepseek_v3"], tmp_path)
    for fn in os.listdir(ckpt):
        if fn != "config.json":
            os.remove(ckpt / fn)
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"no *.safetensors files (and no {INDEX}) in {ckpt}")):
        hf.load_checkpoint(str(ckpt))
    (ckpt / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"in {ckpt}; it holds ['pytorch_model.bin'], PyTorch files this loader does not read: "
            f"re-save the model with transformers' save_pretrained, which writes safetensors")):
        hf.load_checkpoint(str(ckpt))


@pytest.mark.parametrize("case", ["moved", "invented"])
def test_index_entry_missing_from_its_shard_names_tensor_and_shard(good, tmp_path, case):
    ckpt = copy_of(good["deepseek_v3"], tmp_path)
    weight_map = json.loads((ckpt / INDEX).read_text())["weight_map"]
    name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
    shard = "model-00005-of-00005.safetensors"
    assert weight_map[name] != shard
    if case == "invented":
        name = "model.layers.0.self_attn.extra.weight"
    edit_json(ckpt / INDEX, lambda index: index["weight_map"].update({name: shard}))
    with pytest.raises(ValueError, match=re.escape(
            f"{ckpt / INDEX} maps 1 tensor(s) to shards that do not hold them, e.g. '{name}' -> "
            f"{shard}: re-save the checkpoint, or rebuild the index from the shards' headers")):
        hf.load_checkpoint(str(ckpt))
