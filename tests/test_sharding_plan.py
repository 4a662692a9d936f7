"""The logical-axis table shards every large weight of the real configs under FSDP.

Measured on abstract 2048-device meshes (`jax.sharding.AbstractMesh`, nothing allocated) with the
project's own `shardings_like(abstract_params, param_axes, mesh)`. "Ideal" is the params divided
by fsdp x expert x tensor: the `data` axis holds whole replicas by design (plain data
parallelism), so a mesh with data=4 is measured against params / 512, not params / 2048.
"""

import math

import jax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from r1jax import config, models
from r1jax.models import qwen2
from r1jax.sharding import MESH_AXES, logical_to_spec, shardings_like

# (data, fsdp, expert, tensor): V3's 2048 H800s as FSDP x EP, with TP2, with 4 data replicas, and
# with the experts inside a node (expert=8); 256 GPUs as 32 nodes of 8.
CLUSTER_MESHES = [(1, 32, 64, 1), (1, 16, 64, 2), (4, 8, 64, 1), (1, 256, 8, 1), (1, 32, 8, 1)]
ALLOWED_OVER_IDEAL = 1.5
LARGE_WEIGHT_BYTES = 4 * 2**20  # a weight above this must be split at least MIN_SPLIT ways
MIN_SPLIT = 32


def per_weight_bytes(cfg, mesh_sizes):
    """[(path, full bytes, per-device bytes, spec)] for every param of `cfg` on the mesh."""
    mesh = AbstractMesh(mesh_sizes, MESH_AXES)
    params = models.abstract_params(cfg)
    shardings = shardings_like(params, models.param_axes(cfg), mesh)
    rows = []
    for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                      jax.tree.leaves(shardings)):
        item = leaf.dtype.itemsize
        rows.append((jax.tree_util.keystr(path), math.prod(leaf.shape) * item,
                     math.prod(sharding.shard_shape(leaf.shape)) * item, sharding.spec))
    return rows


CONFIGS = {"deepseek_v3_671b": config.deepseek_v3_671b, "deepseek_v2_lite": config.deepseek_v2_lite,
           "qwen2_5_7b": qwen2.qwen2_5_7b}


@pytest.mark.parametrize("mesh_sizes", CLUSTER_MESHES)
def test_v3_per_device_params_within_1_5x_of_ideal(mesh_sizes):
    """Issue 17's table: 15.4, 9.3 and 24.0 GiB per device before these rules."""
    rows = per_weight_bytes(config.deepseek_v3_671b(), mesh_sizes)
    _, fsdp, expert, tensor = mesh_sizes
    total = sum(r[1] for r in rows)
    per_device = sum(r[2] for r in rows)
    ideal = total / (fsdp * expert * tensor)
    assert total > 2.6e12  # 671B float32 params, i.e. the real config was measured
    assert per_device <= ALLOWED_OVER_IDEAL * ideal, (
        f"mesh {mesh_sizes}: {per_device / 2**30:.2f} GiB of params per device, "
        f"{per_device / ideal:.2f}x the ideal {ideal / 2**30:.2f} GiB; largest shards: "
        f"{sorted(rows, key=lambda r: -r[2])[:3]}")


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("mesh_sizes", CLUSTER_MESHES)
def test_no_large_weight_is_replicated(name, mesh_sizes):
    unsplit = [(path, full, full // shard, spec)
               for path, full, shard, spec in per_weight_bytes(CONFIGS[name](), mesh_sizes)
               if full > LARGE_WEIGHT_BYTES and full // shard < MIN_SPLIT]
    assert not unsplit, (f"{name} on mesh {mesh_sizes}: weights over {LARGE_WEIGHT_BYTES >> 20} MiB "
                         f"split fewer than {MIN_SPLIT} ways (path, bytes, split, spec): {unsplit[:5]}")


def test_mla_up_projections_keep_heads_whole_per_shard():
    """q_b and kv_b split the latent (fsdp) and heads (tensor, expert), never inside a head."""
    axes = models.param_axes(config.deepseek_v3_671b())["layers"][0]["attn"]
    mesh = {"data": 1, "fsdp": 32, "expert": 64, "tensor": 1}
    assert logical_to_spec(axes["q_b"], (1536, 128, 192), mesh) == P("fsdp", "expert", None)
    assert logical_to_spec(axes["kv_b"], (512, 128, 256), mesh) == P("fsdp", "expert", None)
    mesh_tp = {"data": 1, "fsdp": 16, "expert": 64, "tensor": 2}
    assert logical_to_spec(axes["kv_b"], (512, 128, 256), mesh_tp) == P("fsdp", ("tensor", "expert"), None)
    mesh_wide = {"data": 1, "fsdp": 256, "expert": 8, "tensor": 1}  # 128 heads on 256: latent only
    assert logical_to_spec(axes["q_b"], (1536, 128, 192), mesh_wide) == P("fsdp", "expert", None)


def test_a_dim_takes_only_the_mesh_axes_that_divide_it():
    # d = 7168 = 7 * 2^10: fsdp x expert = 2048 does not divide it, so it takes fsdp and leaves
    # expert to the next dim; a 4-head toy on tensor=8 stays replicated over tensor.
    mesh = {"data": 1, "fsdp": 32, "expert": 64, "tensor": 1}
    assert logical_to_spec(("embed", "mlp"), (7168, 18432), mesh) == P("fsdp", "expert")
    assert logical_to_spec(("embed", "mlp"), (7168, 18432), {**mesh, "fsdp": 16}) == P(("fsdp", "expert"), None)
    assert logical_to_spec(("heads", None), (4, 16), {"tensor": 8, "fsdp": 2}) == P("fsdp", None)
    assert logical_to_spec(("expert", "embed", "mlp"), (256, 7168, 2048),
                           {"fsdp": 32, "expert": 64, "tensor": 2}) == P("expert", "fsdp", "tensor")
