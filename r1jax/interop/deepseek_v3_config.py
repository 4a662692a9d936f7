"""ModelConfig <-> Hugging Face `config.json` (DeepseekV3Config / released DeepSeek-V3 format).

The weights of this architecture are mapped by deepseek_v3.py.

Keys that change the math and are not implemented here raise a ValueError naming the key; keys
that only describe the run (dtype, ids, architectures, ...) are accepted and ignored. Every error
names the config.json it was read from (or "config.json" for a dict).
"""

from __future__ import annotations

import os

from r1jax.config import ModelConfig, YarnConfig
from r1jax.interop.checkpoint_io import build_config, read_architecture_config, require_fields
from r1jax.nn.fp8_quant import TILE

# What config.json says for this architecture (transformers' model_type and class names).
# DeepSeek-V2 configs use the same keys and parser.
NAME = "DeepSeek-V3"
MODEL_TYPES = ("deepseek_v3", "deepseek_v2")
ARCHITECTURES = ("DeepseekV3ForCausalLM", "DeepseekV2ForCausalLM")

# Keys that carry no math for the forward pass (or are derived from others).
_IGNORED_KEYS = {
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
    "bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "initializer_range",
    "attention_dropout", "pretraining_tp", "num_key_value_heads", "qk_head_dim", "head_dim",
    "aux_loss_alpha", "seq_aux", "ep_size", "output_router_logits", "router_aux_loss_coef",
    "quantization_config", "_name_or_path", "tie_word_embeddings", "max_position_embeddings",
    "return_dict", "output_hidden_states", "output_attentions", "id2label", "label2id",
    "problem_type", "chunk_size_feed_forward", "is_encoder_decoder", "add_cross_attention",
    "tokenizer_class", "num_mtp_layers",
}
_MAPPED_KEYS = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size",
    "moe_intermediate_size", "first_k_dense_replace", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "n_group", "topk_group", "scoring_func", "topk_method",
    "norm_topk_prob", "routed_scaling_factor", "num_nextn_predict_layers", "rope_theta",
    "rope_interleave", "rope_scaling", "rope_parameters", "rms_norm_eps", "hidden_act",
    "moe_layer_freq", "attention_bias", "mlp_bias",
}
# Mapped keys without a default: the shapes of the model.
_REQUIRED_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size",
    "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok",
)


def _require(where: str, key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{where}: {key}={value!r} is not supported "
                         f"(supported: {sorted(map(str, allowed))})")


def _yarn_from(hf: dict, where: str) -> tuple[YarnConfig | None, float | None]:
    """Parse `rope_parameters` (v5) or `rope_scaling` (v4); returns (yarn, rope_theta or None)."""
    field = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    rope = hf.get(field)
    if not rope:
        return None, None
    kind = rope.get("rope_type", rope.get("type", "default"))
    theta = rope.get("rope_theta")
    if kind in (None, "default"):
        return None, theta
    if kind != "yarn":
        raise ValueError(f"{where}: rope_scaling.type={kind!r} is not supported "
                         f"(supported: 'yarn', 'default')")
    for key in ("attention_factor", "partial_rotary_factor"):
        if rope.get(key) not in (None, 1.0):
            raise ValueError(f"{where}: rope_scaling.{key}={rope[key]!r} is not supported")
    if rope.get("truncate", True) is not True:
        raise ValueError(f"{where}: rope_scaling.truncate=false is not supported")
    require_fields(rope, ("factor", "original_max_position_embeddings"), where, NAME,
                   prefix=field + ".")
    return YarnConfig(
        factor=float(rope["factor"]),
        original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
        beta_fast=float(rope.get("beta_fast") or 32), beta_slow=float(rope.get("beta_slow") or 1),
        mscale=float(rope.get("mscale") or 0.0), mscale_all_dim=float(rope.get("mscale_all_dim") or 0.0),
    ), theta


def _check_block_fp8(quant: dict | None, where: str) -> None:
    """The released FP8 format is the only quantization read: E4M3 in 128x128 blocks."""
    if not quant:
        return
    if quant.get("fmt", "e4m3") != "e4m3":
        raise ValueError(f"{where}: quantization_config.fmt={quant['fmt']!r} is not supported "
                         f"(supported: 'e4m3')")
    blocks = quant.get("weight_block_size", [TILE, TILE])
    if list(blocks) != [TILE, TILE]:
        raise ValueError(f"{where}: quantization_config.weight_block_size={blocks!r} is not "
                         f"supported (supported: [{TILE}, {TILE}], the blocks of fp8_v3)")


def from_hf_config(source: str | os.PathLike | dict, *, config_path: str | None = None,
                   **overrides) -> ModelConfig:
    """Build a ModelConfig from a config.json path, a checkpoint directory or a dict (read from
    `config_path`, which errors then name)."""
    hf, where = read_architecture_config(
        source, config_path, name=NAME, model_types=MODEL_TYPES, architectures=ARCHITECTURES,
        known_keys=_IGNORED_KEYS | _MAPPED_KEYS, required=_REQUIRED_KEYS)
    _check_block_fp8(hf.get("quantization_config"), where)
    _require(where, "hidden_act", hf.get("hidden_act", "silu"), {"silu"})
    _require(where, "moe_layer_freq", hf.get("moe_layer_freq", 1), {1})
    _require(where, "attention_bias", hf.get("attention_bias", False), {False})
    _require(where, "mlp_bias", hf.get("mlp_bias", False), {False})
    _require(where, "scoring_func", hf.get("scoring_func", "sigmoid"), {"sigmoid", "softmax"})
    _require(where, "topk_method", hf.get("topk_method", "noaux_tc"),
             {"noaux_tc", "greedy", "group_limited_greedy"})
    heads, kv_heads = hf["num_attention_heads"], hf.get("num_key_value_heads") or hf["num_attention_heads"]
    if kv_heads != heads:
        raise ValueError(f"{where}: num_key_value_heads={kv_heads} != num_attention_heads={heads}; "
                         "MLA has one latent KV shared by all heads, GQA is not part of this model")
    yarn, theta = _yarn_from(hf, where)
    kw = dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=heads, q_lora_rank=hf.get("q_lora_rank"), kv_lora_rank=hf["kv_lora_rank"],
        qk_nope_head_dim=hf["qk_nope_head_dim"], qk_rope_head_dim=hf["qk_rope_head_dim"],
        v_head_dim=hf["v_head_dim"], intermediate_size=hf["intermediate_size"],
        moe_intermediate_size=hf["moe_intermediate_size"],
        first_k_dense=hf.get("first_k_dense_replace", 0), n_routed_experts=hf["n_routed_experts"],
        n_shared_experts=hf.get("n_shared_experts") or 0,
        num_experts_per_tok=hf["num_experts_per_tok"], n_group=hf.get("n_group") or 1,
        topk_group=hf.get("topk_group") or 1, scoring_func=hf.get("scoring_func", "sigmoid"),
        topk_method=hf.get("topk_method", "noaux_tc"), norm_topk_prob=bool(hf.get("norm_topk_prob", True)),
        routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
        num_mtp_modules=hf.get("num_nextn_predict_layers", hf.get("num_mtp_layers", 0)) or 0,
        rope_theta=float(theta if theta is not None else hf.get("rope_theta", 10000.0)),
        rope_interleave=bool(hf.get("rope_interleave", True)), yarn=yarn,
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )
    return build_config(ModelConfig, kw, where, overrides)


def to_hf_config(cfg: ModelConfig) -> dict:
    """The config.json that `transformers` DeepseekV3ForCausalLM loads for this model."""
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.yarn is not None:
        y = cfg.yarn
        rope = {"rope_type": "yarn", "rope_theta": cfg.rope_theta, "factor": y.factor,
                "original_max_position_embeddings": y.original_max_position_embeddings,
                "beta_fast": y.beta_fast, "beta_slow": y.beta_slow, "mscale": y.mscale,
                "mscale_all_dim": y.mscale_all_dim}
    return {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_heads, "q_lora_rank": cfg.q_lora_rank,
        "kv_lora_rank": cfg.kv_lora_rank, "qk_nope_head_dim": cfg.qk_nope_head_dim,
        "qk_rope_head_dim": cfg.qk_rope_head_dim, "v_head_dim": cfg.v_head_dim,
        "intermediate_size": cfg.intermediate_size, "moe_intermediate_size": cfg.moe_intermediate_size,
        "first_k_dense_replace": cfg.first_k_dense, "n_routed_experts": cfg.n_routed_experts,
        "n_shared_experts": cfg.n_shared_experts, "num_experts_per_tok": cfg.num_experts_per_tok,
        "n_group": cfg.n_group, "topk_group": cfg.topk_group, "scoring_func": cfg.scoring_func,
        "topk_method": cfg.topk_method, "norm_topk_prob": cfg.norm_topk_prob,
        "routed_scaling_factor": cfg.routed_scaling_factor,
        "num_nextn_predict_layers": cfg.num_mtp_modules, "rope_interleave": cfg.rope_interleave,
        "rope_parameters": rope, "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps, "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": "silu", "attention_bias": False, "moe_layer_freq": 1,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": cfg.param_dtype,
    }
