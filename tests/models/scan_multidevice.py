"""Run with 8 simulated CPU devices (XLA_FLAGS set by the caller): the loss and gradients of
DeepSeek-V3 tiny with its MoE layers scanned, on meshes that split params over fsdp, expert and
tensor, against the unrolled layers on one device. Prints JSON on a RESULT line."""

import json

import jax
import numpy as np

from r1jax import config, models
from r1jax.sharding import MeshConfig, batch_sharding, make_mesh, param_shardings, replicated

MESHES = [(1, 2, 2, 2), (2, 1, 4, 1)]


def loss_and_grads(cfg, mesh, params, tokens):
    def loss(params, tokens):
        logits, aux = models.forward(cfg, params, tokens)
        return logits.std() + aux["mtp_logits"].std() + 100 * aux["balance_loss"]

    with jax.set_mesh(mesh):
        shardings = param_shardings(cfg, mesh)
        fn = jax.jit(jax.value_and_grad(loss), in_shardings=(shardings, batch_sharding(mesh)),
                     out_shardings=(replicated(mesh), shardings))
        value, grads = fn(jax.device_put(params, shardings),
                          jax.device_put(tokens, batch_sharding(mesh)))
        spec = str(grads["layers"][2]["moe"]["gate"].sharding.spec)
    return float(value), jax.device_get(grads), spec


def main():
    assert jax.device_count() == 8, jax.devices()
    # 1 dense layer, then a scanned run of 3 MoE layers; MTP on.
    cfg = config.tiny(num_layers=4, init_std=0.05, scan_layers=True)
    params = jax.device_get(models.init(cfg, jax.random.key(0)))
    tokens = np.random.default_rng(0).integers(1, cfg.vocab_size, (8, 16)).astype(np.int32)
    out = {}
    with jax.default_matmul_precision("highest"):
        one_device = make_mesh(MeshConfig(), jax.devices()[:1])
        ref_loss, ref_grads, _ = loss_and_grads(cfg.replace(scan_layers=False), one_device,
                                                params, tokens)
        for shape in MESHES:
            loss, grads, spec = loss_and_grads(cfg, make_mesh(MeshConfig(*shape)), params, tokens)
            diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), grads, ref_grads)
            out[str(shape)] = {"loss_diff": abs(loss - ref_loss),
                               "grad_diff": max(jax.tree.leaves(diff)), "expert_spec": spec}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
