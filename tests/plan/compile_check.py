"""Run with 8 simulated CPU devices (XLA_FLAGS set by the caller): lower and compile the real
train step (sft_step, AdamW, born-sharded state, donation: what train/loop.py jits) for a
scaled-down V3 (MLA with q_lora, a dense layer, MoE layers, MTP) on fake-device meshes, and
print XLA's memory analysis beside the plan's estimate for the same setup as JSON."""

import json

import jax
import jax.numpy as jnp

from r1jax import config, models, plan
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh, replicated
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.state import state_shardings
from r1jax.train.steps import sft_step_fn

# V3's structure at a size that compiles in seconds. float32 compute: XLA:CPU runs bf16
# elementwise math in float32 anyway, which a GPU would not. n_routed_experts equals expert=4,
# one expert per device: XLA:CPU lowers ragged_dot to a masked dense product that materialises
# every local expert's (rows, D) copy, a CPU artifact the plan does not model (a GPU runs a
# grouped GEMM); with one local expert there is nothing to expand.
MODEL = config.tiny(num_layers=3, hidden_size=128, num_heads=8, q_lora_rank=64, kv_lora_rank=64,
                    qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                    intermediate_size=256, moe_intermediate_size=64, n_routed_experts=4,
                    n_group=2, topk_group=2, num_experts_per_tok=2, vocab_size=512,
                    dtype="float32")
MESHES = [(1, 2, 4, 1), (2, 1, 4, 1)]
BATCH, SEQ = 16, 128


def compiled_memory(mesh_sizes):
    tx = make_optimizer(OptimConfig(), 10, models.param_roles(MODEL))
    mesh = make_mesh(MeshConfig(*mesh_sizes))
    with jax.set_mesh(mesh):
        shardings, abstract = state_shardings(MODEL, tx, mesh)
        rows = batch_sharding(mesh)
        state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                             abstract, shardings)
        batch = {k: jax.ShapeDtypeStruct((BATCH, SEQ), dt, sharding=rows)
                 for k, dt in (("inputs", jnp.int32), ("targets", jnp.int32), ("loss_mask", jnp.bool_))}
        step = jax.jit(sft_step_fn(MODEL, tx), in_shardings=(shardings, rows),
                       out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
        stats = step.lower(state, batch).compile().memory_analysis()
    return {"argument": stats.argument_size_in_bytes, "temp": stats.temp_size_in_bytes,
            "output": stats.output_size_in_bytes, "alias": stats.alias_size_in_bytes}


def planned_memory(mesh_sizes):
    setup = plan.Setup(model=MODEL, mesh=mesh_sizes, batch=BATCH, seq=SEQ, micro_batches=1,
                       bf16_moments=False, dispatch="all_gather", remat="none")
    return plan.make_plan(setup)["memory"]


def main():
    assert jax.device_count() == 8, jax.devices()
    out = {str(m): {"compiled": compiled_memory(m), "plan": planned_memory(m)} for m in MESHES}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
