"""Run with 8 simulated CPU devices (XLA_FLAGS set by the caller): one sft_step on several
meshes vs 1 device, distill_step on one, and a checkpoint saved on one mesh restored onto
another. Prints JSON. (GRPO on 8 devices runs as a whole stage: tests/rl/test_grpo_stage.py.)"""

import json
import sys
import tempfile

import jax
import numpy as np

from r1jax import config, models
from r1jax.distill.distill_step import distill_step_fn
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh, param_shardings, replicated
from r1jax.train.checkpoint import Checkpointer, abstract_with_shardings
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.state import create_sharded_state, state_shardings
from r1jax.train.steps import sft_step_fn

MESHES = [(8, 1, 1, 1), (2, 2, 2, 1), (1, 2, 2, 2), (2, 1, 4, 1)]
# The online distillation teacher: another size and layout (one wider MoE layer, no MTP).
TEACHER = config.tiny(num_layers=1, first_k_dense=0, hidden_size=96, num_mtp_modules=0, init_std=0.1)


def batch_for(cfg, b=8, t=16):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, cfg.vocab_size, (b, t + 1)).astype(np.int32)
    seg = np.ones((b, t), np.int32)
    seg[2, 10:] = 0
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": seg > 0,
            "segment_ids": seg, "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))}


def one_step(cfg, tx, mesh, batch, kind="sft"):
    with jax.set_mesh(mesh):
        state, shardings = create_sharded_state(cfg, tx, mesh, jax.random.key(0))
        bsh = batch_sharding(mesh)
        fn = (sft_step_fn(cfg, tx, bias_update_speed=1e-3) if kind == "sft" else
              distill_step_fn(cfg, tx, teacher_cfg=TEACHER, temperature=2.0, bias_update_speed=1e-3))
        if kind == "distill":  # the teacher's params ride in the batch, sharded like params
            bsh = {k: param_shardings(TEACHER, mesh) if k == "teacher" else bsh for k in batch}
        step = jax.jit(fn,
                       in_shardings=(shardings, bsh), out_shardings=(shardings, replicated(mesh)))
        state, metrics = step(state, jax.device_put(batch, bsh))
    return state, shardings, metrics


def main():
    assert jax.device_count() == 8, jax.devices()
    # Two layers (dense + MoE) and one MTP module: every kind of weight, half the compile time.
    cfg = config.tiny(num_layers=2, init_std=0.05)
    tx = make_optimizer(OptimConfig(lr=1e-2, warmup_steps=1), 10, models.param_roles(cfg))
    batch = batch_for(cfg)
    out = {}
    with jax.default_matmul_precision("highest"):
        ref_state, _, ref_m = one_step(cfg, tx, make_mesh(MeshConfig(), jax.devices()[:1]), batch)
        ref_params = jax.device_get(ref_state.params)
        for shape in MESHES:
            mesh = make_mesh(MeshConfig(*shape))
            state, shardings, m = one_step(cfg, tx, mesh, batch)
            diff = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                                jax.device_get(state.params), ref_params)
            out[str(shape)] = {"loss_diff": abs(float(m["loss"]) - float(ref_m["loss"])),
                               "param_diff": max(jax.tree.leaves(diff))}
            # The params really are spread: an expert weight lives on the expert axis.
            out[str(shape)]["expert_spec"] = str(state.params["layers"][1]["moe"]["gate"].sharding.spec)
        dbatch = {**batch, "teacher": jax.device_get(jax.jit(models.init, static_argnums=0)(
            TEACHER, jax.random.key(1)))}
        _, _, d_ref = one_step(cfg, tx, make_mesh(MeshConfig(), jax.devices()[:1]), dbatch, "distill")
        for shape in [(2, 2, 2, 1)]:
            _, _, d = one_step(cfg, tx, make_mesh(MeshConfig(*shape)), dbatch, "distill")
            out["distill" + str(shape)] = {"loss_diff": abs(float(d["loss"]) - float(d_ref["loss"])),
                                           "grad_norm_diff": abs(float(d["grad_norm"]) - float(d_ref["grad_norm"]))}
        # Save on (8,1,1,1), restore onto (1,2,2,2).
        src_state, _, _ = one_step(cfg, tx, make_mesh(MeshConfig(8, 1, 1, 1)), batch)
        with tempfile.TemporaryDirectory() as d:
            ck = Checkpointer(d, save_every=1, keep=1, async_save=False)
            ck.save(1, src_state, {"cursor": 7})
            ck.wait()
            mesh2 = make_mesh(MeshConfig(1, 2, 2, 2))
            sh2, abstract = state_shardings(cfg, tx, mesh2)
            restored, data_state = ck.restore(abstract_with_shardings(abstract, sh2))
            ck.close()
        # Typed PRNG keys (state.rng) have no numpy view: compare their key data.
        as_np = lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(  # noqa: E731
            x.dtype, jax.dtypes.prng_key) else x)
        diff = jax.tree.map(lambda a, b: float(np.abs(as_np(a) - as_np(b)).max()),
                            jax.device_get(restored), jax.device_get(src_state))
        out["restore_other_mesh"] = {"max_diff": max(jax.tree.leaves(diff)), "data_state": data_state,
                                     "spec": str(restored.params["layers"][1]["moe"]["gate"].sharding.spec)}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
