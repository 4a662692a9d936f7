"""Accelerator and interconnect rates the plan turns bytes and FLOPs into seconds with.

Rates are per GPU and per direction, dense (no sparsity), as vendors state them:
  H800 [V3 §3.1]: NVLink 160 GB/s, InfiniBand 50 GB/s (one 400 Gb/s NIC per GPU), 989 TFLOP/s
    BF16, 1979 TFLOP/s FP8, 80 GB of HBM, 8 GPUs per node.
  H100 SXM: the same GEMM rates, NVLink 450 GB/s per direction (900 GB/s bidirectional), one
    400 Gb/s NIC (50 GB/s) per GPU.
A collective over a mesh axis whose devices all sit in one node runs at the NVLink rate; one
that crosses nodes runs at the InfiniBand rate (the slowest hop bounds a ring).
"""

from __future__ import annotations

import dataclasses

GB = 1e9
TFLOP = 1e12


@dataclasses.dataclass(frozen=True)
class Hardware:
    name: str
    nvlink_bytes_per_s: float  # per GPU, per direction
    ib_bytes_per_s: float  # per GPU, per direction
    bf16_flops_per_s: float  # dense
    fp8_flops_per_s: float  # dense
    memory_bytes: float
    gpus_per_node: int = 8


H800 = Hardware("H800", 160 * GB, 50 * GB, 989 * TFLOP, 1979 * TFLOP, 80 * GB)
H100 = Hardware("H100", 450 * GB, 50 * GB, 989 * TFLOP, 1979 * TFLOP, 80 * GB)
HARDWARE = {"h800": H800, "h100": H100}


def axis_within_node(mesh_sizes: dict[str, int], axis: str, gpus_per_node: int) -> bool:
    """Whether every group along `axis` sits in one node. Devices fill the mesh in row-major
    order (r1jax.sharding.make_mesh reshapes jax.devices(), which number a node's GPUs
    consecutively), so an axis's group spans stride x size consecutive devices, stride being
    the product of the later axes' sizes."""
    names = list(mesh_sizes)
    stride = 1
    for later in names[names.index(axis) + 1:]:
        stride *= mesh_sizes[later]
    return stride * mesh_sizes[axis] <= gpus_per_node


def link_rate(hw: Hardware, mesh_sizes: dict[str, int], axes) -> float:
    """Bytes/s per GPU of a collective over `axes`: NVLink if all of them stay in a node."""
    axes = [a for a in axes if mesh_sizes[a] > 1]
    if all(axis_within_node(mesh_sizes, a, hw.gpus_per_node) for a in axes):
        return hw.nvlink_bytes_per_s
    return hw.ib_bytes_per_s
