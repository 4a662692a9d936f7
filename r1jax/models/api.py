"""Functional API of the DeepSeek-V3 model: `init`, `forward`, `init_cache`, `param_axes`,
and the MTP drafter of speculative decoding (`init_mtp_cache`, `mtp_draft`).

Every function dispatches on the config type: a `ModelConfig` runs DeepSeek-V3 (below); other
architectures register their config type in `ARCHITECTURES` with a module of the same functions
(`Qwen2Config` and `LlamaConfig` -> `r1jax.models.dense`, the dense R1-Distill students). The MTP
functions exist for DeepSeek-V3 only and refuse other configs.

Params are a pure nested dict of arrays (what orbax saves and `r1jax.interop.hf` maps to Hugging
Face names). The NNX module is rebuilt abstractly from the config and merged with the params
inside the trace, so every function here is jit-, grad- and eval_shape-friendly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.config import ModelConfig
from r1jax.models import deepseek_v3, dense, llama, qwen2
from r1jax.models.deepseek_v3 import DeepseekV3
from r1jax.nn.mla import absorbed_weights
from r1jax.nn.params import merge_params, variable_axes, variable_roles

# Config type -> module with the same functional API (DeepSeek-V3 is this module itself).
ARCHITECTURES = {qwen2.Qwen2Config: dense, llama.LlamaConfig: dense}


def _dispatch_on_config(fn):
    """Run `fn` for a ModelConfig, else the same-named function of the config's architecture."""

    @functools.wraps(fn)
    def dispatched(cfg, *args, **kwargs):
        other = ARCHITECTURES.get(type(cfg))
        return (fn if other is None else getattr(other, fn.__name__))(cfg, *args, **kwargs)

    return dispatched


def _abstract_model(cfg: ModelConfig) -> DeepseekV3:
    return nnx.eval_shape(lambda: DeepseekV3(cfg, rngs=nnx.Rngs(0)))


@_dispatch_on_config
def init(cfg: ModelConfig, rng: jax.Array) -> dict:
    """Random params ~ N(0, cfg.init_std^2), norms at 1, routing biases at 0."""
    model = DeepseekV3(cfg, rngs=nnx.Rngs(params=rng))
    return nnx.to_pure_dict(nnx.state(model))


@_dispatch_on_config
def abstract_params(cfg: ModelConfig) -> dict:
    """ShapeDtypeStructs of every param, without allocating (works for the 671B config)."""
    return nnx.to_pure_dict(nnx.state(_abstract_model(cfg)))


@_dispatch_on_config
def param_axes(cfg: ModelConfig) -> dict:
    """Logical axis names of every param, same tree structure as the params."""
    return variable_axes(nnx.state(_abstract_model(cfg)))


@_dispatch_on_config
def param_roles(cfg: ModelConfig) -> dict:
    """Training role of every param ("decay", "no_decay", "frozen"; r1jax/nn/params.py), read
    from the variable types: the optimizer's labels."""
    return variable_roles(nnx.state(_abstract_model(cfg)))


@_dispatch_on_config
def mtp_depth(cfg: ModelConfig) -> int:
    """D, the number of multi-token-prediction depths `forward` adds to aux["mtp_logits"]."""
    return cfg.num_mtp_modules


@_dispatch_on_config
def update_routing_biases(cfg: ModelConfig, params: dict, expert_load, mtp_expert_load,
                          speed: float) -> dict:
    """Params after the aux-loss-free bias rule for one step's expert loads (aux["expert_load"],
    aux["mtp_expert_load"]); unchanged for an architecture without routed experts."""
    if not cfg.num_moe_layers:
        return params
    return deepseek_v3.update_routing_biases(cfg, params, expert_load, mtp_expert_load, speed)


@_dispatch_on_config
def bind(cfg: ModelConfig, params: dict) -> DeepseekV3:
    """The NNX module holding `params` (inside a trace, holding tracers)."""
    return merge_params(_abstract_model(cfg), params)


@_dispatch_on_config
def forward(cfg: ModelConfig, params: dict, tokens: jax.Array, *, positions=None,
            attention_mask=None, segment_ids=None, cache=None, with_mtp: bool = True):
    """Logits (B, T, V) float32 and aux.

    tokens (B, T) int; positions (B, T) RoPE positions (default: slot index); attention_mask
    (B, T) 1 for real tokens, 0 for padding; segment_ids (B, T) for packed rows (no attention
    across segments). With `cache` (from `init_cache`), tokens are appended at cache["index"] and
    attention runs on the compressed latent cache; aux["cache"] is the updated cache.
    aux: balance_loss (), expert_load (L_moe, E), mtp_expert_load (D, E) ((0, E) unless the MTP
    modules ran), and mtp_logits (D, B, T, V) when the config has MTP and no cache is given.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (batch, length); got {tokens.shape=}")
    if cache is not None and cache["key_valid"].shape[0] != tokens.shape[0]:
        raise ValueError(f"cache batch {cache['key_valid'].shape[0]} != tokens batch {tokens.shape[0]}")
    model = bind(cfg, params)
    return model(tokens, positions=positions, attention_mask=attention_mask,
                 segment_ids=segment_ids, cache=cache, with_mtp=with_mtp)


@_dispatch_on_config
def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
    """Empty latent cache: c_kv, a tuple of L (B, S, C) buffers, and k_rope, L (B, S, R), i.e. 576
    values per token per layer for V3, plus key validity (B, S) and the next write slot.

    One buffer per layer, not one (L, ...) array: each decode step writes its new slots into
    each layer's buffer in place (a loop carry), where a stacked array would be rebuilt whole."""
    return _latent_cache(cfg, cfg.num_layers, batch, max_len, dtype)


def _latent_cache(cfg: ModelConfig, layers: int, batch: int, max_len: int, dtype) -> dict:
    return {
        "c_kv": tuple(jnp.zeros((batch, max_len, cfg.kv_lora_rank), dtype) for _ in range(layers)),
        "k_rope": tuple(jnp.zeros((batch, max_len, cfg.qk_rope_head_dim), dtype)
                        for _ in range(layers)),
        "key_valid": jnp.zeros((batch, max_len), jnp.bool_),
        "index": jnp.zeros((), jnp.int32),
    }


@_dispatch_on_config
def with_decode_weights(cfg: ModelConfig, params: dict, cache: dict) -> dict:
    """`cache` plus what every decode step would otherwise derive from the weights again: each
    MLA layer's W_UK and W_UV in the absorbed path's layouts (r1jax/nn/mla.py). For a loop of
    cached calls (the sampler's), computed once before it; the outputs are unchanged."""
    absorbed = tuple(_absorbed(cfg, params["layers"][i]["attn"]) for i in range(cfg.num_layers))
    return {**cache, "absorbed": absorbed}


def with_mtp_decode_weights(cfg: ModelConfig, params: dict, mtp_cache: dict) -> dict:
    """`with_decode_weights` for the MTP block's cache (`init_mtp_cache`): its W_UK and W_UV,
    computed once before a loop of `mtp_draft` calls."""
    check_has_mtp(cfg)
    return {**mtp_cache, "absorbed": (_absorbed(cfg, params["mtp"][0]["block"]["attn"]),)}


def _absorbed(cfg: ModelConfig, attn: dict) -> tuple[jax.Array, jax.Array]:
    """One MLA layer's (W_UK, W_UV) from its params, in the compute dtype."""
    return absorbed_weights(attn["kv_b"].astype(jnp.dtype(cfg.dtype)), cfg.qk_nope_head_dim)


def check_has_mtp(cfg) -> None:
    """Raise a ValueError unless `cfg` is a DeepSeek-V3 config with at least one MTP module."""
    if not isinstance(cfg, ModelConfig) or cfg.num_mtp_modules < 1:
        what = (f"num_mtp_modules={cfg.num_mtp_modules}" if isinstance(cfg, ModelConfig)
                else "a dense model without MTP modules")
        raise ValueError(f"MTP drafting needs a DeepSeek-V3 config with num_mtp_modules >= 1; "
                         f"got {type(cfg).__name__} ({what}): sample with draft='none'")


def init_mtp_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
    """Empty latent cache of the depth-1 MTP block (one layer), laid out like `init_cache`."""
    check_has_mtp(cfg)
    return _latent_cache(cfg, 1, batch, max_len, dtype)


def mtp_draft(cfg: ModelConfig, params: dict, next_tokens: jax.Array, hidden: jax.Array, *,
              positions: jax.Array, attention_mask: jax.Array, cache: dict):
    """(logits (B, T, V) of the depth-1 MTP module, updated MTP cache).

    next_tokens (B, T): token i + 1 for each query i; hidden (B, T, D): the main model's h_i
    (aux["hidden"] of a cached `forward`); positions, attention_mask (B, T) as for `forward`;
    cache from `init_mtp_cache`, written at cache["index"]."""
    check_has_mtp(cfg)
    if next_tokens.ndim != 2 or hidden.shape[:2] != next_tokens.shape:
        raise ValueError(f"next_tokens (B, T) and hidden (B, T, D) must agree; got "
                         f"{next_tokens.shape=}, {hidden.shape=}")
    return bind(cfg, params).mtp_draft(next_tokens, hidden, positions, attention_mask, cache)
