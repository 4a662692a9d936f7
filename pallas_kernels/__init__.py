"""Hopper (sm_90) Pallas Mosaic GPU kernels for DeepSeek-V3 / R1, each with a jnp reference.

One folder per op (`reference.py` the truth, `mosaic_gpu.py` the kernel, `api.py`
the `implementation=None|"xla"|"mosaic_gpu"` dispatcher):

  fp8_block_gemm   e4m3 GEMM with 1x128 activation / 128x128 weight scales
  grouped_matmul   MoE expert GEMM (ragged_dot contract) with custom_vjp
  mla_decode       absorbed MLA attention over the latent cache, split-K
  mla_attention    causal flash attention, Dqk=192 / Dv=128, with custom_vjp

This package imports nothing from `r1jax`.
"""
