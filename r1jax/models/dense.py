"""The dense decoder of the R1-Distill students: Qwen2 / Qwen2.5 and Llama 3.x [R1 §2.4].

embedding -> [GQA attention (RoPE; q/k/v biases in Qwen2) + SwiGLU] x L -> RMSNorm -> head.

Qwen2 and Llama are one architecture up to the q/k/v biases (an architecture constant of each
config class, `qkv_bias`), Llama 3.1's RoPE frequency scaling (`rope_scaling`) and their sizes;
qwen2.py and llama.py hold their configs and named sizes on top of this module.

Axis glossary: B batch, T tokens, S key slots, D hidden, V vocab, L layers, H query heads,
K key/value heads (GQA: query head h reads kv head h // G), G = H / K, Dh head dim, F mlp.

Same functional API as the DeepSeek-V3 model (`r1jax.models` dispatches on the config type):
params are a pure dict, `forward` merges them into the NNX module inside the trace and returns
(logits float32, aux) with the DeepSeek aux keys (zero balance loss, empty expert load), so the
training steps run unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.models.deepseek_v3 import attention_mask_for, output_logits
from r1jax.models.layer_scan import run_layers, scan_this_call
from r1jax.nn.linear import project, project_in
from r1jax.nn.attention import CausalMask, causal_attention, masked_softmax
from r1jax.nn.mlp import SwiGLU
from r1jax.nn.norms import RMSNorm
from r1jax.nn.params import merge_params, normal_param, variable_axes, variable_roles, zeros_param
from r1jax.nn.partitioning import constrain, lookup_table
from r1jax.nn.rope import Llama3RopeScaling, apply_rope, plain_rope_cos_sin

ACTIVATION_AXES = ("batch", "length", "embed")


@dataclasses.dataclass(frozen=True)
class DenseConfig:
    """Shapes and options of a dense decoder. Use a subclass (Qwen2Config, LlamaConfig): each
    gives the defaults of its family and says whether q/k/v carry biases."""

    # Not a field: whether q/k/v projections have biases is what the architecture is (Qwen2 yes,
    # Llama 3 no), and the checkpoint formats have no switch for it.
    qkv_bias: ClassVar[bool] = False

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    init_std: float = 0.02
    precision: str = "bf16"  # projection recipe, as ModelConfig.precision (r1jax/nn/linear.py)
    dtype: str = "float32"  # compute dtype of activations; params are stored in param_dtype
    param_dtype: str = "float32"
    rope_scaling: Llama3RopeScaling | None = None  # None: unscaled RoPE
    # Run the layers under jax.lax.scan (one compiled layer body; r1jax/models/layer_scan.py);
    # False unrolls them in Python (the tiny CPU sizes, as config.tiny). Params are stored per
    # layer either way.
    scan_layers: bool = True

    def __post_init__(self):
        if type(self) is DenseConfig:  # the functional API and checkpoints dispatch on the family
            raise TypeError("DenseConfig is the shared base; build a Qwen2Config or a LlamaConfig")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be divisible by "
                             f"num_kv_heads={self.num_kv_heads} (grouped-query attention)")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.precision not in ("bf16", "fp8_v3", "fp8_per_tensor"):
            raise ValueError(f"precision={self.precision!r}: choose bf16, fp8_v3 or fp8_per_tensor")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers={self.scan_layers!r} must be True or False")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, Llama3RopeScaling):
            raise ValueError(f"rope_scaling={self.rope_scaling!r}: give a Llama3RopeScaling or None")

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


# ----------------------------------------------------------------------------- modules

class GQAttention(nnx.Module):
    """Causal grouped-query attention (q/k/v biases when cfg.qkv_bias) with a K/V cache."""

    def __init__(self, cfg: DenseConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, k, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        std, pd = cfg.init_std, cfg.param_dtype
        self.q = normal_param(rngs, (d, h, dh), ("embed", "heads", None), std, pd)
        self.k = normal_param(rngs, (d, k, dh), ("embed", "kv_heads", None), std, pd)
        self.v = normal_param(rngs, (d, k, dh), ("embed", "kv_heads", None), std, pd)
        if cfg.qkv_bias:
            # Qwen2 keeps biases on q, k and v (not on o); they start at zero like the reference.
            self.q_bias = zeros_param((h, dh), ("heads", None), pd)
            self.k_bias = zeros_param((k, dh), ("kv_heads", None), pd)
            self.v_bias = zeros_param((k, dh), ("kv_heads", None), pd)
        self.o = normal_param(rngs, (h, dh, d), ("heads", None, "embed"), std, pd)

    def _project(self, x, name: str):
        """x (B, T, D) -> (B, T, heads, Dh) through weight `name`, plus its bias if any."""
        y = project(x, getattr(self, name)[...], self.cfg.precision)
        return y + getattr(self, f"{name}_bias")[...].astype(x.dtype) if self.cfg.qkv_bias else y

    def __call__(self, x, cos, sin, mask, cache_layer=None, cache_index=None):
        """x (B, T, D); cos/sin (B, T, Dh/2); mask (B, T, S) True where key s is visible, or
        without a cache a `CausalMask` (key_valid, segment_ids) that describes it.

        Without a cache (training, prefill) attention runs in query blocks with a recomputing
        backward, as DeepSeek-V3's does (r1jax/nn/attention.py): no (B, H, T, S) scores. With
        `cache_layer` = (k (B, K, S, Dh), v (B, K, Dh, S)) the new keys/values are written
        at `cache_index` and attention runs over the whole cache. Returns (out (B, T, D),
        updated cache_layer or None).
        """
        cfg, dt = self.cfg, x.dtype
        b, t, _ = x.shape
        q, k, v = self._project(x, "q"), self._project(x, "k"), self._project(x, "v")
        # q (B, T, H, Dh); k, v (B, T, K, Dh). Both families rotate the whole head in the
        # half-split layout (rotate_half).
        q = apply_rope(q, cos, sin, interleave=False)
        k = apply_rope(k, cos, sin, interleave=False)
        new_cache = None
        if cache_layer is not None:
            cache_k, cache_v = cache_layer  # (B, K, S, Dh), (B, K, Dh, S): see init_cache
            cache_k = jax.lax.dynamic_update_slice_in_dim(
                cache_k, jnp.transpose(k, (0, 2, 1, 3)).astype(cache_k.dtype), cache_index, axis=2)
            cache_v = jax.lax.dynamic_update_slice_in_dim(
                cache_v, jnp.transpose(v, (0, 2, 3, 1)).astype(cache_v.dtype), cache_index, axis=3)
            new_cache = (cache_k, cache_v)
            k, v = cache_k.astype(dt), cache_v.astype(dt)
        groups = cfg.num_heads // cfg.num_kv_heads
        if isinstance(mask, CausalMask):
            # Query head h = k * G + g reads kv head k: the G heads share one GEMM per block.
            o = causal_attention(q, k, v, mask, softmax_scale=cfg.head_dim**-0.5)  # (B, T, H, Dh)
            return project_in(o.astype(dt), self.o[...], cfg.precision, 2), new_cache  # (B, T, D)
        q = q.reshape(b, t, cfg.num_kv_heads, groups, cfg.head_dim)  # (B, T, K, G, Dh)
        scores = jnp.einsum("btkgd,bksd->bkgts", q, k) * cfg.head_dim**-0.5  # (B, K, G, T, S)
        probs = masked_softmax(scores, mask[:, None, None]).astype(dt)
        o = jnp.einsum("bkgts,bkds->btkgd", probs, v).reshape(b, t, cfg.num_heads, cfg.head_dim)
        return project_in(o, self.o[...], cfg.precision, 2), new_cache  # (B, T, D)


class Block(nnx.Module):
    """Pre-norm decoder layer: h + attn(norm(h)), then + SwiGLU(norm(.))."""

    def __init__(self, cfg: DenseConfig, *, rngs: nnx.Rngs):
        eps, pd = cfg.rms_norm_eps, cfg.param_dtype
        self.attn_norm = RMSNorm(cfg.hidden_size, eps=eps, axis_name="embed", param_dtype=pd)
        self.attn = GQAttention(cfg, rngs=rngs)
        self.ffn_norm = RMSNorm(cfg.hidden_size, eps=eps, axis_name="embed", param_dtype=pd)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, std=cfg.init_std, param_dtype=pd,
                          rngs=rngs, precision=cfg.precision)

    def __call__(self, h, cos, sin, mask, cache_layer=None, cache_index=None):
        a, new_cache = self.attn(self.attn_norm(h), cos, sin, mask, cache_layer, cache_index)
        h = h + a
        return h + self.mlp(self.ffn_norm(h)), new_cache


class DenseDecoder(nnx.Module):
    def __init__(self, cfg: DenseConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, pd = cfg.hidden_size, cfg.param_dtype
        self.embed = normal_param(rngs, (cfg.vocab_size, d), ("vocab", "embed"), cfg.init_std, pd)
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(d, eps=cfg.rms_norm_eps, axis_name="embed", param_dtype=pd)
        if not cfg.tie_word_embeddings:
            self.lm_head = normal_param(rngs, (d, cfg.vocab_size), ("embed", "vocab"), cfg.init_std, pd)

    def head(self, h: jax.Array) -> jax.Array:
        lm_head = None if self.cfg.tie_word_embeddings else self.lm_head[...]
        return output_logits(h, self.embed[...], lm_head)  # (B, T, V) float32

    def __call__(self, tokens, positions=None, attention_mask=None, segment_ids=None, cache=None):
        cfg = self.cfg
        b, t = tokens.shape
        token_mask = (jnp.ones((b, t), jnp.bool_) if attention_mask is None
                      else attention_mask.astype(jnp.bool_))
        index, cache_valid = None, None
        if cache is not None:
            index = cache["index"]
            cache_valid = jax.lax.dynamic_update_slice_in_dim(cache["key_valid"], token_mask, index,
                                                              axis=1)  # (B, S)
        if positions is None:
            first = 0 if index is None else index
            positions = jnp.broadcast_to(first + jnp.arange(t), (b, t))
        # Without a cache the visibility stays structured (no (B, T, S) array): r1jax/nn/attention.py.
        mask = (CausalMask(token_mask, segment_ids) if cache is None
                else attention_mask_for(token_mask, segment_ids, cache_valid, index, t))  # (B, T, S)
        cos, sin = plain_rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)

        table = lookup_table(self.embed[...].astype(jnp.dtype(cfg.dtype)))  # (V, D)
        h = constrain(table[tokens], ACTIVATION_AXES)  # (B, T, D)

        def apply(layer, h, layer_cache):
            h, layer_cache = layer(h, cos, sin, mask, layer_cache, index)
            return constrain(h, ACTIVATION_AXES), layer_cache

        layer_caches = None if cache is None else list(zip(cache["k"], cache["v"]))
        h, new_caches = run_layers(self.layers, apply, h, layer_caches,
                                   scan=scan_this_call(cfg.scan_layers, cache))
        logits = self.head(self.final_norm(h))  # (B, T, V) float32

        no_experts = jnp.zeros((0, 0), jnp.float32)
        aux = {"balance_loss": jnp.zeros((), jnp.float32), "expert_load": no_experts,
               "mtp_expert_load": no_experts}
        if cache is not None:
            aux["cache"] = {"k": tuple(k for k, _ in new_caches),
                            "v": tuple(v for _, v in new_caches), "key_valid": cache_valid,
                            "index": index + t}
        return logits, aux


# ----------------------------------------------------------------------------- functional API

def _abstract_model(cfg: DenseConfig) -> DenseDecoder:
    return nnx.eval_shape(lambda: DenseDecoder(cfg, rngs=nnx.Rngs(0)))


def init(cfg: DenseConfig, rng: jax.Array) -> dict:
    """Random params ~ N(0, cfg.init_std^2), norms at 1, q/k/v biases (if any) at 0."""
    return nnx.to_pure_dict(nnx.state(DenseDecoder(cfg, rngs=nnx.Rngs(params=rng))))


def abstract_params(cfg: DenseConfig) -> dict:
    """ShapeDtypeStructs of every param, without allocating."""
    return nnx.to_pure_dict(nnx.state(_abstract_model(cfg)))


def param_axes(cfg: DenseConfig) -> dict:
    """Logical axis names of every param, same tree structure as the params."""
    return variable_axes(nnx.state(_abstract_model(cfg)))


def param_roles(cfg: DenseConfig) -> dict:
    """Training role of every param (r1jax/nn/params.py): norms and q/k/v biases are not decayed."""
    return variable_roles(nnx.state(_abstract_model(cfg)))


def mtp_depth(cfg: DenseConfig) -> int:
    """The dense decoders have no multi-token prediction modules."""
    return 0


def update_routing_biases(cfg: DenseConfig, params: dict, expert_load, mtp_expert_load,
                          speed: float) -> dict:
    """A dense model has no routing biases: params unchanged."""
    return params


def bind(cfg: DenseConfig, params: dict) -> DenseDecoder:
    """The NNX module holding `params` (inside a trace, holding tracers)."""
    return merge_params(_abstract_model(cfg), params)


def forward(cfg: DenseConfig, params: dict, tokens: jax.Array, *, positions=None,
            attention_mask=None, segment_ids=None, cache=None, with_mtp: bool = True):
    """Logits (B, T, V) float32 and aux, with the arguments of the DeepSeek-V3 `forward`.

    With `cache` (from `init_cache`), tokens are appended at cache["index"] and aux["cache"] is
    the updated cache. aux: balance_loss () = 0, expert_load and mtp_expert_load (0, 0): there are
    no experts;
    `with_mtp` is accepted and ignored (no MTP modules).
    """
    del with_mtp
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (batch, length); got {tokens.shape=}")
    if cache is not None and cache["key_valid"].shape[0] != tokens.shape[0]:
        raise ValueError(f"cache batch {cache['key_valid'].shape[0]} != tokens batch {tokens.shape[0]}")
    return bind(cfg, params)(tokens, positions=positions, attention_mask=attention_mask,
                             segment_ids=segment_ids, cache=cache)


def init_cache(cfg: DenseConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
    """Empty K/V cache: k, a tuple of L (B, K, S, Dh) buffers (rotated keys), v, a tuple of L
    (B, K, Dh, S) buffers (one per layer, written in place while decoding: r1jax/models/api.py),
    key validity (B, S), next slot.

    Each buffer is laid out as the decode step's attention GEMMs read it (per (b, k): keys S x Dh,
    values transposed Dh x S), so XLA:CPU hands them to its GEMMs as they are; with both as
    (B, S, K, Dh) every step copied every layer's whole live K and V into that layout first
    (Qwen2 small, 16 rows: a sixth of the decode time, bench in BENCHMARKS.md)."""
    k_shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    v_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_len)
    layers = range(cfg.num_layers)
    return {"k": tuple(jnp.zeros(k_shape, dtype) for _ in layers),
            "v": tuple(jnp.zeros(v_shape, dtype) for _ in layers),
            "key_valid": jnp.zeros((batch, max_len), jnp.bool_), "index": jnp.zeros((), jnp.int32)}


def with_decode_weights(cfg: DenseConfig, params: dict, cache: dict) -> dict:
    """`cache` as it is: a dense decode step reads its weights as stored."""
    return cache


def count_params(cfg: DenseConfig) -> dict[str, int]:
    """Counts from abstract shapes. `non_embedding` leaves out the embedding and an untied head,
    as the Qwen2.5 report counts; every param is active, and there is no MTP."""
    total = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params(cfg)))
    embedding = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    return {"total": total, "non_embedding": total - embedding, "activated": total,
            "total_with_mtp": total, "mtp": 0}


def train_flops_per_token(cfg: DenseConfig, seq_len: int) -> float:
    """6 * (matmul params: all but the embedding lookup; a tied head counts once as a matmul)
    plus causal attention 3 * 2 * 2 * Dh * H * T/2 per layer (QK^T and PV, forward x3)."""
    matmul_params = count_params(cfg)["total"] - (0 if cfg.tie_word_embeddings else
                                                   cfg.vocab_size * cfg.hidden_size)
    return 6.0 * matmul_params + 3 * cfg.num_layers * cfg.num_heads * 2 * cfg.head_dim * seq_len
