"""The DeepSeek-V3 transformer: embedding -> [MLA + (dense | MoE) FFN] x L -> norm -> head, + MTP.

Axis glossary: B batch, T tokens, S cached key slots, D hidden, V vocab, L layers, E experts.

The Flax NNX modules describe structure only; the public API (`r1jax.models.api`) is functional:
params are a pure dict, and `forward` merges them into the module inside the trace.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.config import ModelConfig
from r1jax.models.layer_scan import run_layers, scan_this_call
from r1jax.nn.attention import CausalMask
from r1jax.nn.balance import update_routing_bias
from r1jax.nn.linear import matmul
from r1jax.nn.mla import MLA
from r1jax.nn.mlp import SwiGLU
from r1jax.nn.moe import MoE
from r1jax.nn.norms import RMSNorm
from r1jax.nn.partitioning import constrain, lookup_table
from r1jax.nn.params import normal_param
from r1jax.nn.rope import rope_cos_sin


ACTIVATION_AXES = ("batch", "length", "embed")


class Block(nnx.Module):
    """Pre-norm decoder layer: h + MLA(norm(h)), then + FFN(norm(.)); FFN dense or MoE."""

    def __init__(self, cfg: ModelConfig, *, moe: bool, rngs: nnx.Rngs):
        eps, pd = cfg.rms_norm_eps, cfg.param_dtype
        self.attn_norm = RMSNorm(cfg.hidden_size, eps=eps, axis_name="embed", param_dtype=pd)
        self.attn = MLA(cfg, rngs=rngs)
        self.ffn_norm = RMSNorm(cfg.hidden_size, eps=eps, axis_name="embed", param_dtype=pd)
        if moe:
            self.moe = MoE(cfg, rngs=rngs)
        else:
            self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, std=cfg.init_std,
                              param_dtype=pd, rngs=rngs, precision=cfg.precision,
                              kernels=cfg.kernels)

    def __call__(self, h, cos, sin, mask, token_mask, cache_layer=None, cache_index=None):
        a, new_cache = self.attn(self.attn_norm(h), cos, sin, mask, cache_layer, cache_index)
        h = h + a
        x = self.ffn_norm(h)
        if hasattr(self, "moe"):
            f, aux = self.moe(x, token_mask)
        else:
            f, aux = self.mlp(x), None
        return h + f, aux, new_cache


class MTPModule(nnx.Module):
    """One multi-token-prediction depth [V3 §2.2 eq. 21]: h' = M [RMSNorm(emb); RMSNorm(h)].

    The concatenation puts the embedding first, as the released weights' eh_proj expects.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, eps, pd = cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype
        self.enorm = RMSNorm(d, eps=eps, axis_name="embed", param_dtype=pd)
        self.hnorm = RMSNorm(d, eps=eps, axis_name="embed", param_dtype=pd)
        # (2D, D): both dims are model dims ([emb; h] in, h' out); the first takes the FSDP axes
        # (2D divides by fsdp x expert where D alone does not), the second what is left.
        self.eh_proj = normal_param(rngs, (2 * d, d), ("embed", "embed"), cfg.init_std, pd)
        self.block = Block(cfg, moe=True, rngs=rngs)
        self.head_norm = RMSNorm(d, eps=eps, axis_name="embed", param_dtype=pd)

    def block_input(self, emb_next: jax.Array, h_prev: jax.Array) -> jax.Array:
        """M [RMSNorm(emb(t_{i+k})); RMSNorm(h_i)] (B, T, D) from emb_next and h_prev (B, T, D)."""
        x = jnp.concatenate([self.enorm(emb_next), self.hnorm(h_prev)], axis=-1)  # (B, T, 2D)
        return jnp.einsum("bte,ed->btd", x, self.eh_proj[...].astype(h_prev.dtype))


def output_logits(h: jax.Array, embed: jax.Array, lm_head: jax.Array | None) -> jax.Array:
    """Logits (B, T, V) float32 of h (B, T, D) through lm_head (D, V), or, tied (lm_head None),
    through the embedding (V, D). The output head stays out of low precision."""
    if lm_head is None:
        return jnp.einsum("btd,vd->btv", h, embed.astype(h.dtype), preferred_element_type=jnp.float32)
    if h.dtype == jnp.float32:  # the projections' matmul, for its weight-gradient GEMM
        return matmul(h, lm_head)
    return jnp.einsum("btd,dv->btv", h, lm_head.astype(h.dtype), preferred_element_type=jnp.float32)


def attention_mask_for(tokens_mask, segment_ids, cache_valid, cache_index, t):
    """Boolean (B, T, S) visibility: causal by slot index, valid keys, same packed segment."""
    if cache_valid is None:  # S = T
        return CausalMask(tokens_mask, segment_ids).dense()
    s = cache_valid.shape[1]
    causal = jnp.arange(s)[None, :] <= (cache_index + jnp.arange(t))[:, None]  # (T, S)
    return causal[None] & cache_valid[:, None, :]


class DeepseekV3(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, pd = cfg.hidden_size, cfg.param_dtype
        self.embed = normal_param(rngs, (cfg.vocab_size, d), ("vocab", "embed"), cfg.init_std, pd)
        self.layers = nnx.List([Block(cfg, moe=i >= cfg.first_k_dense, rngs=rngs)
                                for i in range(cfg.num_layers)])
        self.final_norm = RMSNorm(d, eps=cfg.rms_norm_eps, axis_name="embed", param_dtype=pd)
        if not cfg.tie_word_embeddings:
            self.lm_head = normal_param(rngs, (d, cfg.vocab_size), ("embed", "vocab"), cfg.init_std, pd)
        self.mtp = nnx.List([MTPModule(cfg, rngs=rngs) for _ in range(cfg.num_mtp_modules)])

    def head(self, h: jax.Array) -> jax.Array:
        lm_head = None if self.cfg.tie_word_embeddings else self.lm_head[...]
        return output_logits(h, self.embed[...], lm_head)  # (B, T, V) float32

    def __call__(self, tokens, positions=None, attention_mask=None, segment_ids=None, cache=None,
                 with_mtp=True):
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        b, t = tokens.shape
        token_mask = (jnp.ones((b, t), jnp.bool_) if attention_mask is None
                      else attention_mask.astype(jnp.bool_))
        if cache is None:
            cache_valid, index = None, None
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(t), (b, t))
        else:
            index = cache["index"]
            cache_valid = jax.lax.dynamic_update_slice_in_dim(cache["key_valid"], token_mask, index,
                                                              axis=1)
            if positions is None:
                positions = jnp.broadcast_to(index + jnp.arange(t), (b, t))
        # Without a cache the visibility stays structured (no (B, T, S) array): r1jax/nn/attention.py.
        mask = (CausalMask(token_mask, segment_ids) if cache is None
                else attention_mask_for(token_mask, segment_ids, cache_valid, index, t))
        cos, sin = rope_cos_sin(cfg, positions)

        h = constrain(lookup_table(self.embed[...].astype(dt))[tokens], ACTIVATION_AXES)  # (B, T, D)

        def apply(layer, h, layer_cache):
            h, aux, layer_cache = layer(h, cos, sin, mask, token_mask, layer_cache, index)
            return constrain(h, ACTIVATION_AXES), (aux, layer_cache)

        # (c_kv, k_rope[, (W_UK, W_UV)]) per layer: the weights when computed ahead (api.py)
        ahead = [cache["absorbed"]] if cache is not None and "absorbed" in cache else []
        layer_caches = None if cache is None else list(zip(cache["c_kv"], cache["k_rope"], *ahead))
        h, outputs = run_layers(self.layers, apply, h, layer_caches,
                                scan=scan_this_call(cfg.scan_layers, cache))
        loads, balance = [], jnp.zeros((), jnp.float32)
        for aux, _ in outputs:
            if aux is not None:  # a MoE layer
                loads.append(aux["expert_load"])
                balance = balance + aux["balance_loss"]
        h_main = self.final_norm(h)
        logits = self.head(h_main)  # (B, T, V) float32

        no_load = jnp.zeros((0, cfg.n_routed_experts))
        aux = {"balance_loss": balance, "expert_load": jnp.stack(loads) if loads else no_load,
               "mtp_expert_load": no_load}  # (D, E) once MTP has run
        if cache is not None:
            aux["cache"] = {"c_kv": tuple(c for _, (c, _) in outputs),
                            "k_rope": tuple(r for _, (_, r) in outputs),
                            "key_valid": cache_valid, "index": index + t,
                            **({"absorbed": cache["absorbed"]} if ahead else {})}
            aux["hidden"] = h_main  # (B, T, D): what the MTP module drafts from (`mtp_draft`)
        elif with_mtp and len(self.mtp):
            aux["mtp_logits"], aux["mtp_expert_load"] = self.mtp_logits(
                tokens, h_main, cos, sin, mask, token_mask)
        return logits, aux

    def mtp_logits(self, tokens, h_prev, cos, sin, mask, token_mask):
        """Logits (D, B, T, V) and expert loads (D, E). Depth k at position i predicts token i + k + 1 [V3 eqs. 21-24].

        Depth k embeds token i + k (zero-padded past the end; those positions carry no loss and,
        being last, are never attended to by earlier positions under the causal mask).
        """
        dt = h_prev.dtype
        emb = lookup_table(self.embed[...].astype(dt))  # (V, D)
        out, loads = [], []
        for k, mod in enumerate(self.mtp, start=1):
            shifted = jnp.pad(tokens[:, k:], ((0, 0), (0, k)))  # (B, T)
            h_prev, aux, _ = mod.block(mod.block_input(emb[shifted], h_prev), cos, sin, mask,
                                       token_mask)
            out.append(self.head(mod.head_norm(h_prev)))
            loads.append(aux["expert_load"])
        return jnp.stack(out), jnp.stack(loads)

    def mtp_draft(self, next_tokens, hidden, positions, token_mask, cache):
        """Depth-1 MTP logits (B, T, V) on its own latent cache: what speculative decoding drafts
        with [V3 §5.4.3]. Query i embeds next_tokens[:, i] (token i + 1) and takes hidden[:, i]
        (h_i after the final norm, aux["hidden"] of a cached forward), as in `mtp_logits`.

        The MTP block attends to its own keys of earlier positions, so `cache` (one layer,
        `api.init_mtp_cache`) takes the new latents at cache["index"] like the main cache.
        Returns (logits, updated cache).
        """
        cfg, mod = self.cfg, self.mtp[0]
        t = next_tokens.shape[1]
        index = cache["index"]
        token_mask = token_mask.astype(jnp.bool_)
        cache_valid = jax.lax.dynamic_update_slice_in_dim(cache["key_valid"], token_mask, index,
                                                          axis=1)
        mask = attention_mask_for(token_mask, None, cache_valid, index, t)  # (B, T, S)
        cos, sin = rope_cos_sin(cfg, positions)
        emb = lookup_table(self.embed[...].astype(hidden.dtype))[next_tokens]  # (B, T, D)
        ahead = (cache["absorbed"][0],) if "absorbed" in cache else ()  # with_mtp_decode_weights
        layer_cache = (cache["c_kv"][0], cache["k_rope"][0], *ahead)
        h, _, (c_kv, k_rope) = mod.block(mod.block_input(emb, hidden), cos, sin, mask, token_mask,
                                         layer_cache, index)
        new_cache = {"c_kv": (c_kv,), "k_rope": (k_rope,), "key_valid": cache_valid,
                     "index": index + t, **({"absorbed": cache["absorbed"]} if ahead else {})}
        return self.head(mod.head_norm(h)), new_cache


def update_routing_biases(cfg: ModelConfig, params: dict, expert_load, mtp_expert_load,
                          speed: float) -> dict:
    """b += speed * sign(mean - load) for every MoE layer (and MTP block) from one step's load
    [V3 §2.1.2]: expert_load (L_moe, E) in layer order, mtp_expert_load (D, E) or (0, E) when the
    MTP modules did not run. Returns new params (the pure dict); everything else is shared."""
    params = dict(params)
    layers = dict(params["layers"])
    for j, i in enumerate(range(cfg.first_k_dense, cfg.num_layers)):
        layer = dict(layers[i])
        layer["moe"] = {**layer["moe"], "bias": update_routing_bias(layer["moe"]["bias"],
                                                                    expert_load[j], speed)}
        layers[i] = layer
    params["layers"] = layers
    if cfg.num_mtp_modules and mtp_expert_load.shape[0]:
        mtp = dict(params["mtp"])
        for k in range(cfg.num_mtp_modules):
            block = dict(mtp[k]["block"])
            block["moe"] = {**block["moe"], "bias": update_routing_bias(block["moe"]["bias"],
                                                                        mtp_expert_load[k], speed)}
            mtp[k] = {**mtp[k], "block": block}
        params["mtp"] = mtp
    return params
