"""Causal MLA flash attention (Dqk=192, Dv=128) for prefill and training."""

from pallas_kernels.mla_attention.api import mla_attention
from pallas_kernels.mla_attention.mosaic_gpu import BlockSizes, check_support
