"""Multi-head Latent Attention [V3 eqs. 1-11] with a naive path and an absorbed decode path.

Axis glossary: B batch, T query tokens, S key tokens, D hidden, H heads, Q q_lora_rank,
C kv_lora_rank (the cached latent), N qk_nope_head_dim, R qk_rope_head_dim, V v_head_dim.

Naive path (training, prefill without cache): expand the latent into per-head keys and values.
Absorbed path (decoding on the latent cache): fold W_UK into the query and W_UV into the output,
so attention runs directly over the cached c_kv (C) and k_rope (R): 576 values per token per
layer for V3 instead of H*(N+R+V). Both compute the same function.

Without a cache the model passes a `CausalMask` (causal, key validity, packed segments) rather
than a (B, T, S) array, and attention runs in query blocks that skip the keys above the diagonal
and recompute probabilities in the backward pass (r1jax/nn/attention.py); "xla_reference" keeps
the dense (B, H, T, S) masked softmax, as does a dense mask handed to this layer.

With `cfg.kernels` "pallas" or "pallas_interpret" the attention core runs as a Pallas kernel where
r1jax/nn/kernels.py says one runs (the kernel supports the head dims, dtype and platform), and
when the kernel can express the mask: it takes only per-row key ranges plus causality. Whether it
can is a property of the batch, so it is checked on the (B, T, S) mask at run time (`lax.cond`):
  naive path:    mask == (s <= t) & (s < L[b]), i.e. right-padded or unpadded rows, no packed
                 segments; L[b] = keys visible to the last query.
  absorbed path: mask == (s >= S0[b]) & (s < L[b] - T + 1 + t), i.e. each row's valid cache
                 slots are one contiguous run [S0[b], L[b]) ending at the new tokens: unpadded
                 prompts, the sampler's left-padded prompts (S0 = padding), and generation,
                 finished rows included (their invalid new slots come after the run).
Other masks (holes inside a row's cache, segment_ids) take the XLA formulations.

The absorbed path reads W_UK and W_UV per head, (H, C, N) and (H, V, C) (`absorbed_weights`).
The sampler computes them once before its decode loop and hands them in with the cache: left to
XLA:CPU, the two transposes of kv_b became physical copies inside the loop, run at every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.config import ModelConfig
from r1jax.nn import kernels
from r1jax.nn.attention import CausalMask, causal_attention, masked_softmax
from r1jax.nn.fp8_quant import QuantizedArray
from r1jax.nn.linear import project, project_in
from r1jax.nn.norms import RMSNorm
from r1jax.nn.params import normal_param
from r1jax.nn.rope import apply_rope


class MLA(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, std, pd = cfg.hidden_size, cfg.num_heads, cfg.init_std, cfg.param_dtype
        c, n, r, v = cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        if cfg.q_lora_rank is None:
            self.q_proj = normal_param(rngs, (d, h, n + r), ("embed", "heads", None), std, pd)
        else:
            q = cfg.q_lora_rank
            self.q_a = normal_param(rngs, (d, q), ("embed", "q_lora"), std, pd)
            self.q_norm = RMSNorm(q, eps=cfg.rms_norm_eps, axis_name="q_lora", param_dtype=pd)
            self.q_b = normal_param(rngs, (q, h, n + r), ("q_lora", "heads", None), std, pd)
        self.kv_a = normal_param(rngs, (d, c + r), ("embed", None), std, pd)
        self.kv_norm = RMSNorm(c, eps=cfg.rms_norm_eps, axis_name="kv_lora", param_dtype=pd)
        self.kv_b = normal_param(rngs, (c, h, n + v), ("kv_lora", "heads", None), std, pd)
        self.o = normal_param(rngs, (h, v, d), ("heads", None, "embed"), std, pd)

    def down_projections(self, x: jax.Array) -> tuple[jax.Array | None, jax.Array]:
        """(q_a(x) (B, T, Q) or None without a q_lora_rank, kv_a(x) (B, T, C+R)).

        Both read the same x: as float weights under the "bf16" recipe they run as one GEMM
        against [q_a | kv_a] (D, Q+C+R), so x streams through the matmul once forward and its
        two backward GEMMs are one each (dx: one (B*T, Q+C+R) x (Q+C+R, D) product, not two
        summed).
        FP8 recipes and FP8-kept weights project separately (each weight has its own scales).
        """
        cfg = self.cfg
        w_kv = self.kv_a.get_value()  # (D, C+R)
        if cfg.q_lora_rank is None:
            return None, project(x, w_kv, cfg.precision, cfg.kernels)
        w_q = self.q_a.get_value()  # (D, Q)
        if cfg.precision != "bf16" or any(isinstance(w, QuantizedArray) for w in (w_q, w_kv)):
            return (project(x, w_q, cfg.precision, cfg.kernels),
                    project(x, w_kv, cfg.precision, cfg.kernels))
        both = project(x, jnp.concatenate([w_q, w_kv.astype(w_q.dtype)], axis=1), cfg.precision,
                       cfg.kernels)  # (B, T, Q+C+R)
        return both[..., :cfg.q_lora_rank], both[..., cfg.q_lora_rank:]

    def queries(self, x: jax.Array, q_down: jax.Array | None, cos: jax.Array, sin: jax.Array):
        """(q_nope (B, T, H, N), q_rope (B, T, H, R) rotated) from x (B, T, D) and, with a
        q_lora_rank, its down-projection q_down (B, T, Q)."""
        cfg, r = self.cfg, self.cfg.precision
        if cfg.q_lora_rank is None:
            q = project(x, self.q_proj.get_value(), r, cfg.kernels)  # (B, T, H, N+R) or (B, T, H*(N+R))
        else:
            c_q = self.q_norm(q_down)  # (B, T, Q)
            q = project(c_q, self.q_b.get_value(), r, cfg.kernels)  # (B, T, H, N+R) or (B, T, H*(N+R))
        # An FP8-kept weight is a flat (K, H*(N+R)) matrix (r1jax/nn/linear.py): restore the heads.
        q = q.reshape(*x.shape[:-1], cfg.num_heads, cfg.qk_head_dim)  # (B, T, H, N+R)
        q_nope, q_rope = jnp.split(q, [cfg.qk_nope_head_dim], axis=-1)
        return q_nope, apply_rope(q_rope, cos, sin, interleave=cfg.rope_interleave)

    def latents(self, kv: jax.Array, cos: jax.Array, sin: jax.Array):
        """(c_kv (B, T, C) normalised, k_rope (B, T, R) rotated) from kv_a(x) (B, T, C+R): what
        the cache stores."""
        cfg = self.cfg
        c_kv, k_rope = jnp.split(kv, [cfg.kv_lora_rank], axis=-1)
        # RMSNorm on the latent only; the rope key is not normalised [V3 §1.2 code mapping].
        return self.kv_norm(c_kv), apply_rope(k_rope, cos, sin, interleave=cfg.rope_interleave)

    def __call__(self, x, cos, sin, mask, cache_layer=None, cache_index=None):
        """x (B, T, D); cos/sin (B, T, R/2); mask (B, T, S) True where key s is visible, or
        without a cache a `CausalMask` (key_valid, segment_ids) that describes it.

        Without a cache S = T (naive path). With `cache_layer` = (c_kv (B, S, C), k_rope (B, S, R))
        the new latents are written at `cache_index` and attention runs absorbed over the cache.
        Returns (out (B, T, D), updated cache_layer or None).
        """
        cfg, dt = self.cfg, x.dtype
        n = cfg.qk_nope_head_dim
        choice = kernels.kernel_choice(cfg.kernels)
        q_down, kv_down = self.down_projections(x)  # (B, T, Q) or None, (B, T, C+R)
        q_nope, q_rope = self.queries(x, q_down, cos, sin)
        c_kv, k_rope = self.latents(kv_down, cos, sin)
        if cache_layer is None:
            kv = project(c_kv, self.kv_b[...], cfg.precision, cfg.kernels)  # (B, S, H, N+V)
            k_nope, v = kv[..., :n], kv[..., n:]

            def dense_attention(q_nope, q_rope, k_nope, k_rope, v):
                visible = mask.dense() if isinstance(mask, CausalMask) else mask  # (B, T, S)
                scores = (jnp.einsum("bthn,bshn->bhts", q_nope, k_nope)
                          + jnp.einsum("bthr,bsr->bhts", q_rope, k_rope))  # (B, H, T, S)
                probs = masked_softmax(scores * cfg.softmax_scale, visible[:, None]).astype(dt)
                return jnp.einsum("bhts,bshv->bthv", probs, v)  # (B, T, H, V)

            def blockwise_attention(q_nope, q_rope, k_nope, k_rope, v):
                q, k = heads_qk(q_nope, q_rope, k_nope, k_rope)
                o = causal_attention(q, k, v, mask, softmax_scale=cfg.softmax_scale)
                return o.astype(dt)  # (B, T, H, V)

            # The structured mask (training, prefill) needs no (B, T, S) array: query blocks,
            # unless the choice is the dense reference (r1jax/nn/kernels.py decides).
            blockwise = isinstance(mask, CausalMask) and kernels.use_blockwise_attention(choice)
            xla_attention = blockwise_attention if blockwise else dense_attention
            args = (q_nope, q_rope, k_nope, k_rope, v)
            qk_spec = jax.ShapeDtypeStruct((*q_nope.shape[:3], cfg.qk_head_dim), dt)  # (B, T, H, N+R)
            if kernels.use_causal_attention(qk_spec, qk_spec, v, choice=choice):
                lengths, fits = right_padded_causal_lengths(
                    mask.dense() if isinstance(mask, CausalMask) else mask)

                def kernel_attention(q_nope, q_rope, k_nope, k_rope, v):
                    q, k = heads_qk(q_nope, q_rope, k_nope, k_rope)
                    o = kernels.causal_attention(q, k, v, lengths, softmax_scale=cfg.softmax_scale,
                                                 choice=choice)
                    return o.astype(dt)  # (B, T, H, V)

                o = jax.lax.cond(fits, kernel_attention, xla_attention, *args)
            else:
                o = xla_attention(*args)
            new_cache = None
        else:
            cache_c, cache_r, *given = cache_layer  # given: [(w_uk, w_uv)] computed ahead
            w_uk, w_uv = given[0] if given else absorbed_weights(self.kv_b[...].astype(dt), n)
            cache_c = jax.lax.dynamic_update_slice_in_dim(cache_c, c_kv.astype(cache_c.dtype),
                                                          cache_index, axis=1)
            cache_r = jax.lax.dynamic_update_slice_in_dim(cache_r, k_rope.astype(cache_r.dtype),
                                                          cache_index, axis=1)
            q_lat = jnp.einsum("bthn,hcn->bthc", q_nope, w_uk)  # (B, T, H, C) absorbed W_UK
            keys_c, keys_r = cache_c.astype(dt), cache_r.astype(dt)  # (B, S, C), (B, S, R)

            def xla_latent_attention(q_lat, q_rope, keys_c, keys_r):
                scores = (jnp.einsum("bthc,bsc->bhts", q_lat, keys_c)
                          + jnp.einsum("bthr,bsr->bhts", q_rope, keys_r))  # (B, H, T, S)
                probs = masked_softmax(scores * cfg.softmax_scale, mask[:, None]).astype(dt)
                # (B, H, T, C) first: XLA:CPU then runs it as a fast GEMM over the cache as it
                # is stored; asked for (B, T, H, C) it took a slower dot over a transposed cache.
                o_lat = jnp.einsum("bhts,bsc->bhtc", probs, keys_c)  # (B, H, T, C)
                return o_lat.transpose(0, 2, 1, 3)  # (B, T, H, C)

            args = (q_lat, q_rope, keys_c, keys_r)
            q_spec = jax.ShapeDtypeStruct((*q_lat.shape[:3], cfg.latent_cache_values_per_token()),
                                          dt)  # (B, T, H, C+R)
            if kernels.use_latent_attention(q_spec, keys_c, keys_r, choice=choice):
                starts, lengths, fits = contiguous_cache_range(mask)

                def kernel_latent_attention(q_lat, q_rope, keys_c, keys_r):
                    q = jnp.concatenate([q_lat, q_rope], axis=-1)  # (B, T, H, C+R)
                    o_lat = kernels.latent_attention(q, keys_c, keys_r, lengths, starts,
                                                     softmax_scale=cfg.softmax_scale, choice=choice)
                    return o_lat.astype(dt)  # (B, T, H, C)

                o_lat = jax.lax.cond(fits, kernel_latent_attention, xla_latent_attention, *args)
            else:
                o_lat = xla_latent_attention(*args)
            o = jnp.einsum("bthc,hvc->bthv", o_lat, w_uv)  # (B, T, H, V) absorbed W_UV
            new_cache = (cache_c, cache_r)
        return project_in(o, self.o.get_value(), cfg.precision, 2, cfg.kernels), new_cache  # (B, T, D)


def absorbed_weights(kv_b: jax.Array, nope_dim: int) -> tuple[jax.Array, jax.Array]:
    """kv_b (C, H, N+V) -> W_UK (H, C, N), W_UV (H, V, C): the layouts the absorbed path's two
    per-head products read (a float kv_b: it is never kept in FP8)."""
    return (kv_b[..., :nope_dim].transpose(1, 0, 2),  # (H, C, N)
            kv_b[..., nope_dim:].transpose(1, 2, 0))  # (H, V, C)


def heads_qk(q_nope, q_rope, k_nope, k_rope) -> tuple[jax.Array, jax.Array]:
    """Per-head queries and keys of dim N+R: q (B, T, H, N+R), k (B, S, H, N+R), the rope key
    (B, S, R) shared by every head."""
    q = jnp.concatenate([q_nope, q_rope], axis=-1)  # (B, T, H, N+R)
    b, s, h, _ = k_nope.shape
    k_rope_h = jnp.broadcast_to(k_rope[:, :, None], (b, s, h, k_rope.shape[-1]))  # (B, S, H, R)
    return q, jnp.concatenate([k_nope, k_rope_h], axis=-1)  # (B, S, H, N+R)


def right_padded_causal_lengths(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-row key lengths L (B,) and whether mask (B, T, T) == (s <= t) & (s < L[b]).

    L[b] is the number of keys the last query sees (it is causally allowed all of them).
    """
    t = mask.shape[1]
    lengths = mask[:, -1, :].sum(-1).astype(jnp.int32)  # (B,)
    slot = jnp.arange(t)
    causal = slot[None, :] <= slot[:, None]  # (T, T)
    expected = causal[None] & (slot[None, None, :] < lengths[:, None, None])  # (B, T, T)
    return lengths, jnp.all(mask == expected)


def contiguous_cache_range(mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-row valid cache range [starts, lengths) (B,) and whether mask (B, T, S) ==
    (s >= starts[b]) & (s < lengths[b] - T + 1 + t).

    That is the decode kernel's visibility: the row's valid slots are contiguous (left padding
    before starts[b]) and the T new tokens are the last T of them. The range is read off the
    last query, which sees the most; a row it sees nothing of gets (0, 0). Queries that see no
    key (a left-padded prompt's pad tokens, t < starts[b]) get zeros from the kernel, as from
    masked_softmax.
    """
    t, s = mask.shape[1:]
    last = mask[:, -1, :]  # (B, S)
    slot = jnp.arange(s)
    lengths = jnp.max(jnp.where(last, slot + 1, 0), axis=-1).astype(jnp.int32)  # (B,) last True + 1
    first = jnp.min(jnp.where(last, slot, s), axis=-1)  # (B,) first True
    starts = jnp.where(lengths > 0, first, 0).astype(jnp.int32)
    limit = lengths[:, None] - t + 1 + jnp.arange(t)[None, :]  # (B, T)
    expected = ((slot[None, None, :] >= starts[:, None, None])
                & (slot[None, None, :] < limit[:, :, None]))  # (B, T, S)
    return starts, lengths, jnp.all(mask == expected)
