"""Load and save Hugging Face checkpoints of the dense decoders (Qwen2, Llama 3.x).

Both store the same tensors under the same names (q/k/v biases only in Qwen2); qwen2.py and
llama.py are these functions bound to their config.json module (qwen2_config.py,
llama_config.py: NAME, from_hf_config, to_hf_config). Reading, layouts and writing are checkpoint_io.py. HF stores
biases flat (H * Dh,), ours are (H, Dh).
"""

from __future__ import annotations

import types

import numpy as np

from r1jax.interop.checkpoint_io import (
    CheckpointReader,
    as_jax_params,
    config_json_path,
    host_params_and_shared_tensors,
    save_dtype,
    to_hf,
    write_checkpoint,
)
from r1jax.models.dense import DenseConfig, abstract_params

# (our path inside a decoder block, HF name suffix, layout kind of checkpoint_io).
_BLOCK_TABLE = [
    (("attn_norm", "scale"), "input_layernorm.weight", "id"),
    (("attn", "q"), "self_attn.q_proj.weight", "heads"),
    (("attn", "k"), "self_attn.k_proj.weight", "heads"),
    (("attn", "v"), "self_attn.v_proj.weight", "heads"),
    (("attn", "o"), "self_attn.o_proj.weight", "o"),
    (("ffn_norm", "scale"), "post_attention_layernorm.weight", "id"),
    (("mlp", "gate"), "mlp.gate_proj.weight", "T"),
    (("mlp", "up"), "mlp.up_proj.weight", "T"),
    (("mlp", "down"), "mlp.down_proj.weight", "T"),
]
_QKV_BIAS_TABLE = [
    (("attn", "q_bias"), "self_attn.q_proj.bias", "bias"),
    (("attn", "k_bias"), "self_attn.k_proj.bias", "bias"),
    (("attn", "v_bias"), "self_attn.v_proj.bias", "bias"),
]


def _block_table(cfg: DenseConfig) -> list:
    return _BLOCK_TABLE + (_QKV_BIAS_TABLE if cfg.qkv_bias else [])


def load_checkpoint(path: str, hf_config: dict, *, config_format: types.ModuleType,
                    keep_fp8: bool = False, **config_overrides) -> tuple[DenseConfig, dict]:
    """(cfg, params) from the checkpoint directory `path` whose config.json is `hf_config`, read
    by `config_format`; params cast to cfg.param_dtype."""
    if keep_fp8:
        raise ValueError(f"{path}: keep_fp8=True is for DeepSeek-V3 checkpoints, not "
                         f"{config_format.NAME}; load it with keep_fp8=False")
    cfg = config_format.from_hf_config(hf_config, config_path=config_json_path(path),
                                       **config_overrides)
    r = CheckpointReader(path)
    abstract = abstract_params(cfg)
    layers = {}
    for i in range(cfg.num_layers):
        layer = {}
        for (group, leaf), suffix, kind in _block_table(cfg):
            shape = abstract["layers"][i][group][leaf].shape
            layer.setdefault(group, {})[leaf] = r.get_shaped(f"model.layers.{i}.{suffix}", kind, shape)
        layers[i] = layer
    params = {"embed": r.get_shaped("model.embed_tokens.weight", "id", abstract["embed"].shape),
              "final_norm": {"scale": r.get_shaped("model.norm.weight", "id", (cfg.hidden_size,))},
              "layers": layers}
    if not cfg.tie_word_embeddings:
        params["lm_head"] = r.get_shaped("lm_head.weight", "T", abstract["lm_head"].shape)
    else:
        r.mark_used("lm_head.weight")  # some tied checkpoints store a copy; transformers ignores it
    r.check_all_used()
    return cfg, as_jax_params(params, cfg.param_dtype)


def params_to_hf(cfg: DenseConfig, params: dict) -> dict[str, np.ndarray]:
    """Our params as HF-named (out, in) float32 numpy tensors."""
    p, out = host_params_and_shared_tensors(cfg, params)
    for i in range(cfg.num_layers):
        for (group, leaf), suffix, kind in _block_table(cfg):
            out[f"model.layers.{i}.{suffix}"] = to_hf(p["layers"][i][group][leaf], kind)
    return out


def save_checkpoint(cfg: DenseConfig, params: dict, path: str, *, config_format: types.ModuleType,
                    dtype: str = "float32", fp8: bool = False,
                    max_shard_bytes: int = 4 << 30) -> None:
    """Write config.json (`config_format.to_hf_config`) + safetensors that `transformers` loads."""
    if fp8:
        raise ValueError(f"fp8=True writes the DeepSeek-V3 release format; {config_format.NAME} "
                         f"checkpoints are stored in float32 or bfloat16 (pass dtype=)")
    np_dtype = save_dtype(dtype)
    tensors = {name: x.astype(np_dtype) for name, x in params_to_hf(cfg, params).items()}
    write_checkpoint(tensors, {**config_format.to_hf_config(cfg), "torch_dtype": dtype}, path,
                     max_shard_bytes)
