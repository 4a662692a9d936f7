"""FP8 (e4m3) GEMM with 1x128 activation and 128x128 weight scales."""

from pallas_kernels.fp8_block_gemm.api import fp8_block_gemm
from pallas_kernels.fp8_block_gemm.mosaic_gpu import BlockSizes, check_support
from pallas_kernels.fp8_block_gemm.reference import quantize_128x128, quantize_1x128
