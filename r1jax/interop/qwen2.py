"""Load and save Hugging Face Qwen2 checkpoints (Qwen2.5, DeepSeek-R1-Distill-Qwen).

`r1jax.interop.hf.load_checkpoint` / `save_checkpoint` come here for `model_type: "qwen2"` and
for a `Qwen2Config`. The config.json mapping is qwen2_config.py; reading, layouts and writing are
checkpoint_io.py. HF stores biases flat (H * Dh,), ours are (H, Dh).
"""

from __future__ import annotations

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
from r1jax.interop.qwen2_config import from_hf_config, to_hf_config
from r1jax.models.qwen2 import Qwen2Config, abstract_params

# (our path inside a decoder block, HF name suffix, layout kind of checkpoint_io).
_BLOCK_TABLE = [
    (("attn_norm", "scale"), "input_layernorm.weight", "id"),
    (("attn", "q"), "self_attn.q_proj.weight", "heads"),
    (("attn", "q_bias"), "self_attn.q_proj.bias", "bias"),
    (("attn", "k"), "self_attn.k_proj.weight", "heads"),
    (("attn", "k_bias"), "self_attn.k_proj.bias", "bias"),
    (("attn", "v"), "self_attn.v_proj.weight", "heads"),
    (("attn", "v_bias"), "self_attn.v_proj.bias", "bias"),
    (("attn", "o"), "self_attn.o_proj.weight", "o"),
    (("ffn_norm", "scale"), "post_attention_layernorm.weight", "id"),
    (("mlp", "gate"), "mlp.gate_proj.weight", "T"),
    (("mlp", "up"), "mlp.up_proj.weight", "T"),
    (("mlp", "down"), "mlp.down_proj.weight", "T"),
]


def load_checkpoint(path: str, hf_config: dict, *, keep_fp8: bool = False,
                    **config_overrides) -> tuple[Qwen2Config, dict]:
    """(cfg, params) from the Qwen2 checkpoint directory `path` whose config.json is `hf_config`,
    cast to cfg.param_dtype."""
    if keep_fp8:
        raise ValueError(f"{path}: keep_fp8=True is for DeepSeek-V3 checkpoints, not Qwen2; "
                         f"load it with keep_fp8=False")
    cfg = from_hf_config(hf_config, config_path=config_json_path(path), **config_overrides)
    r = CheckpointReader(path)
    abstract = abstract_params(cfg)
    layers = {}
    for i in range(cfg.num_layers):
        layer = {}
        for (group, leaf), suffix, kind in _BLOCK_TABLE:
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


def params_to_hf(cfg: Qwen2Config, params: dict) -> dict[str, np.ndarray]:
    """Our params as HF-named (out, in) float32 numpy tensors."""
    p, out = host_params_and_shared_tensors(cfg, params)
    for i in range(cfg.num_layers):
        for (group, leaf), suffix, kind in _BLOCK_TABLE:
            out[f"model.layers.{i}.{suffix}"] = to_hf(p["layers"][i][group][leaf], kind)
    return out


def save_checkpoint(cfg: Qwen2Config, params: dict, path: str, *, dtype: str = "float32",
                    fp8: bool = False, max_shard_bytes: int = 4 << 30) -> None:
    """Write config.json + safetensors that `transformers` Qwen2ForCausalLM loads."""
    if fp8:
        raise ValueError("fp8=True writes the DeepSeek-V3 release format; Qwen2 checkpoints are "
                         "stored in float32 or bfloat16 (pass dtype=)")
    np_dtype = save_dtype(dtype)
    tensors = {name: x.astype(np_dtype) for name, x in params_to_hf(cfg, params).items()}
    write_checkpoint(tensors, {**to_hf_config(cfg), "torch_dtype": dtype}, path, max_shard_bytes)
