"""Bad inputs fail with errors that name the key, tensor or file."""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from r1jax import config, models
from r1jax.interop import hf
from r1jax.interop.deepseek_v3_config import from_hf_config, to_hf_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = config.tiny(num_mtp_modules=1)
    params = models.init(cfg, jax.random.key(0))
    path = tmp_path_factory.mktemp("ckpt")
    hf.save_checkpoint(cfg, params, str(path), max_shard_bytes=200_000)  # several shards
    return cfg, params, path


def test_config_round_trip():
    for name in config.SIZES:
        cfg = config.get_model_config(name)
        back = from_hf_config(to_hf_config(cfg))
        assert back == cfg.replace(init_std=back.init_std, dtype=back.dtype,
                                   scan_layers=back.scan_layers), name


def test_unsupported_rope_type():
    hf_cfg = to_hf_config(config.tiny())
    hf_cfg["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 1e4}
    with pytest.raises(ValueError, match="rope_scaling.type='longrope'"):
        from_hf_config(hf_cfg)


@pytest.mark.parametrize("key,value", [("hidden_act", "gelu"), ("topk_method", "weird"),
                                       ("num_key_value_heads", 2), ("moe_layer_freq", 2),
                                       ("quantization_config", {"weight_block_size": [64, 64]}),
                                       ("quantization_config", {"fmt": "e5m2"})])
def test_math_changing_keys_are_rejected(key, value):
    hf_cfg = to_hf_config(config.tiny())
    hf_cfg[key] = value
    with pytest.raises(ValueError, match=key):
        from_hf_config(hf_cfg)


def test_shape_mismatch_names_the_tensor(saved, tmp_path):
    _, _, path = saved
    for fn in os.listdir(path):
        os.link(path / fn, tmp_path / fn)
    hf_cfg = json.loads((path / "config.json").read_text())
    hf_cfg["kv_lora_rank"] = 16
    os.remove(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
    with pytest.raises(ValueError, match=r"kv_a_proj_with_mqa.weight has shape \(40, 64\), but config.json implies \(24, 64\)"):
        hf.load_checkpoint(str(tmp_path))


def test_missing_shard_names_the_file(saved, tmp_path):
    _, _, path = saved
    files = sorted(os.listdir(path))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 1
    for fn in files:
        if fn != shards[1]:
            os.link(path / fn, tmp_path / fn)
    with pytest.raises(FileNotFoundError, match=shards[1]):
        hf.load_checkpoint(str(tmp_path))


def test_missing_directory_and_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load_checkpoint(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(config.tiny())))
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="model.safetensors: not a valid safetensors file"):
        hf.load_checkpoint(str(tmp_path))


def test_sharded_round_trip_and_forward_shape_error(saved):
    cfg, params, path = saved
    cfg2, params2 = hf.load_checkpoint(str(path))
    assert cfg2.num_mtp_modules == 1
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, params2)
    assert all(jax.tree.leaves(same))
    with pytest.raises(ValueError, match="tokens must be"):
        models.forward(cfg, params, jnp.zeros((5,), jnp.int32))
