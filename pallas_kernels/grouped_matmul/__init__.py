"""Grouped (ragged) matmul for MoE experts, forward and backward."""

from pallas_kernels.grouped_matmul.api import grouped_matmul
from pallas_kernels.grouped_matmul.mosaic_gpu import BlockSizes, check_support
