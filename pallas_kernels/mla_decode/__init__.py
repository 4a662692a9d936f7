"""MLA decode attention over the latent (c_kv, k_rope) cache with split-K."""

from pallas_kernels.mla_decode.api import mla_decode
from pallas_kernels.mla_decode.mosaic_gpu import BlockSizes, check_support, default_block_sizes
