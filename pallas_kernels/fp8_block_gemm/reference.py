"""FP8 block-scaled GEMM in plain jnp (the truth the kernel is tested against).

DeepSeek-V3 (sec. 3.3.2) quantizes activations per 1x128 tile and weights per
128x128 block, and promotes the tensor-core partial sums to fp32 with the
scales applied once every 128 K elements (the DeepGEMM contract). The weight
gradient (Wgrad, dW = x^T dy) contracts over tokens, so both of its operands
are 1x128 activation tiles: there b carries one scale per row per 128-chunk
(`b_scale_rows=True`, DeepGEMM's "1D1D" kernel) instead of one per block.
"""

import jax
import jax.numpy as jnp

SCALE_BLOCK = 128


def fp8_block_gemm(a, a_scale, b, b_scale, *, out_dtype=jnp.bfloat16, b_scale_rows=False):
  """out[m, n] = sum_k (a[m, kc] . b[n, kc]) * a_scale[m, k] * b_row_scale[n, k].

  a: (M, K) e4m3, a_scale: (M, ceil(K/128)) f32, b: (N, K) e4m3 (K-major).
  b_scale: (ceil(N/128), ceil(K/128)) f32, one per 128x128 block, so
  b_row_scale[n, k] = b_scale[n // 128, k]; or with `b_scale_rows`
  (N, ceil(K/128)), one per row per 128-chunk: b_row_scale = b_scale.
  """
  m, k = a.shape
  n = b.shape[0]
  kb = -(-k // SCALE_BLOCK)
  pad = kb * SCALE_BLOCK - k
  a32 = jnp.pad(a.astype(jnp.float32), ((0, 0), (0, pad))).reshape(m, kb, SCALE_BLOCK)  # (M, KB, 128)
  b32 = jnp.pad(b.astype(jnp.float32), ((0, 0), (0, pad))).reshape(n, kb, SCALE_BLOCK)  # (N, KB, 128)
  partial = jnp.einsum("mkc,nkc->kmn", a32, b32, precision=jax.lax.Precision.HIGHEST)  # (KB, M, N)
  b_row_scale = b_scale if b_scale_rows else jnp.repeat(b_scale, SCALE_BLOCK, axis=0)[:n]  # (N, KB)
  scaled = partial * a_scale.T[:, :, None] * b_row_scale.T[:, None, :]  # (KB, M, N)
  return scaled.sum(axis=0).astype(out_dtype)


def quantize_1x128(x):
  """Per-row, per-128-column e4m3 quantization: returns (x_fp8 (M,K), scale (M,KB))."""
  m, k = x.shape
  kb = -(-k // SCALE_BLOCK)
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, kb * SCALE_BLOCK - k))).reshape(m, kb, SCALE_BLOCK)
  amax = jnp.maximum(jnp.abs(xp).max(axis=-1), 1e-4)  # (M, KB)
  scale = amax / float(jnp.finfo(jnp.float8_e4m3fn).max)
  q = (xp / scale[..., None]).reshape(m, -1)[:, :k].astype(jnp.float8_e4m3fn)
  return q, scale


def quantize_128x128(w):
  """Per-128x128-block e4m3 quantization: returns (w_fp8 (N,K), scale (NB,KB))."""
  n, k = w.shape
  nb, kb = -(-n // SCALE_BLOCK), -(-k // SCALE_BLOCK)
  wp = jnp.pad(w.astype(jnp.float32), ((0, nb * SCALE_BLOCK - n), (0, kb * SCALE_BLOCK - k)))
  blocks = wp.reshape(nb, SCALE_BLOCK, kb, SCALE_BLOCK)  # (NB, 128, KB, 128)
  amax = jnp.maximum(jnp.abs(blocks).max(axis=(1, 3)), 1e-4)  # (NB, KB)
  scale = amax / float(jnp.finfo(jnp.float8_e4m3fn).max)
  q = (blocks / scale[:, None, :, None]).reshape(nb * SCALE_BLOCK, -1)[:n, :k]
  return q.astype(jnp.float8_e4m3fn), scale
