"""What the config.json of every dense decoder (Qwen2, Llama) shares: shape fields and RoPE.

qwen2_config.py and llama_config.py read their own keys and take the rest from here. RoPE is
unscaled (rope_type "default") or Llama 3.1's scaling ("llama3"); other kinds (YaRN, dynamic,
linear, longrope) change the math and raise a ValueError naming the key. The scaling is read from
`rope_parameters` (transformers 5) or `rope_scaling` with a top-level `rope_theta` (released
Llama 3.x and older files), and written as `rope_parameters`.
"""

from __future__ import annotations

from r1jax.interop.checkpoint_io import require_fields
from r1jax.models.dense import DenseConfig
from r1jax.nn.rope import Llama3RopeScaling

# Keys that carry no math for the forward pass, in both families.
IGNORED_KEYS = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "bos_token_id",
    "eos_token_id", "pad_token_id", "use_cache", "initializer_range", "attention_dropout",
    "_name_or_path", "return_dict", "output_hidden_states", "output_attentions", "id2label",
    "label2id", "tokenizer_class",
}
MAPPED_KEYS = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "rope_theta", "rope_scaling", "rope_parameters",
    "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "hidden_act",
}
# Mapped keys without a default: the shapes of the model.
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size")
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def reject(where: str, key: str, value, why: str) -> None:
    raise ValueError(f"{where}: {key}={value!r} is not supported ({why})")


def rope_from_hf(hf: dict, where: str, name: str) -> tuple[float, Llama3RopeScaling | None]:
    """(rope_theta, Llama 3 scaling or None) of config.json `hf` (read from `where`)."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in (None, "default", "llama3"):
        reject(where, "rope_scaling.rope_type", kind,
               "supported: 'default' and 'llama3'; YaRN/dynamic/linear scaling is not implemented")
    if rope.get("partial_rotary_factor") not in (None, 1.0):
        reject(where, "rope_scaling.partial_rotary_factor", rope["partial_rotary_factor"],
               "supported: 1.0")
    theta = float(rope.get("rope_theta") or hf.get("rope_theta", 10000.0))
    if kind != "llama3":
        return theta, None
    require_fields(rope, LLAMA3_KEYS, where, name, prefix="rope_scaling.")
    try:
        return theta, Llama3RopeScaling(
            factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
            original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def dense_fields_from_hf(hf: dict, where: str, name: str) -> dict:
    """The DenseConfig fields of config.json `hf` (read from `where`), after checking the keys
    every dense decoder shares."""
    if hf.get("hidden_act", "silu") != "silu":
        reject(where, "hidden_act", hf["hidden_act"], "supported: 'silu'")
    theta, scaling = rope_from_hf(hf, where, name)
    heads = hf["num_attention_heads"]
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        intermediate_size=hf["intermediate_size"], rope_theta=theta, rope_scaling=scaling,
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def dense_fields_to_hf(cfg: DenseConfig) -> dict:
    """The config.json keys of `cfg` every dense decoder shares (architecture names excluded)."""
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                    high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    return {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size, "rope_parameters": rope,
        "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings, "hidden_act": "silu",
        "torch_dtype": cfg.param_dtype,
    }
