"""Expert-parallel `routed_experts` and the whole model on 8 simulated CPU devices vs 1 device.

Run as a script (XLA_FLAGS must be set before jax is imported, so not inside the pytest process):
    python tests/nn/moe_dispatch_multidevice.py
Prints one JSON line per check: {"check": name, "max_err": float} or {"check": name, "error": msg}.
tests/nn/test_moe_dispatch.py runs it and asserts on those lines.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import r1jax.config  # noqa: E402
import r1jax.models  # noqa: E402
from r1jax.nn.moe_dispatch import routed_experts  # noqa: E402

AXES = ("data", "fsdp", "expert", "tensor")
MESHES = [(1, 1, 8, 1), (2, 1, 4, 1), (2, 2, 2, 1), (1, 2, 2, 2)]
N, D, F, E, K = 64, 32, 16, 16, 4


def make_mesh(shape, axis_type=AxisType.Auto):
    return jax.make_mesh(shape, AXES, axis_types=(axis_type,) * len(AXES))


def report(check, fn):
    try:
        print(json.dumps({"check": check, "max_err": float(fn())}), flush=True)
    except Exception as e:  # noqa: BLE001 - the message goes to the test's assertion
        print(json.dumps({"check": check, "error": f"{type(e).__name__}: {e}"[:2000]}), flush=True)


def max_err(got, want):
    """Largest |got - want| over every leaf, relative to the leaf's scale when that exceeds 1."""
    return max(float(np.max(np.abs(np.asarray(g) - np.asarray(w))) / max(1.0, np.max(np.abs(w))))
               for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)))


def problem(seed, skewed=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, size=(N, K)).astype(np.float32)
    indices = np.argsort(rng.uniform(size=(N, E)), axis=1)[:, :K]  # K distinct experts per token
    if skewed:  # 7 of 8 tokens pick expert 5 first: one expert shard gets most of the pairs
        hot = rng.uniform(size=N) < 7 / 8
        indices[hot] = [[5] + [e for e in row if e != 5][:K - 1] for row in indices[hot]]
    gate = (rng.normal(size=(E, D, F)) / np.sqrt(D)).astype(np.float32)
    up = (rng.normal(size=(E, D, F)) / np.sqrt(D)).astype(np.float32)
    down = (rng.normal(size=(E, F, D)) / np.sqrt(F)).astype(np.float32)
    cotangent = rng.normal(size=(N, D)).astype(np.float32)
    return (x, weights, indices.astype(np.int32), gate, up, down), cotangent


@jax.jit
def value_and_grads(x, weights, indices, gate, up, down, cotangent):
    """y and d<y, cotangent>/d(x, weights, gate, up, down)."""
    def project(x, weights, gate, up, down):
        y = routed_experts(x, weights, indices, gate, up, down, n_experts=E)
        return jnp.sum(y * cotangent), y
    grads, y = jax.grad(project, argnums=(0, 1, 2, 3, 4), has_aux=True)(x, weights, gate, up, down)
    return y, grads


def check_routed_experts(args, cotangent, mesh):
    want = value_and_grads(*args, cotangent)
    with jax.set_mesh(mesh):
        jaxpr = str(jax.make_jaxpr(value_and_grads)(*args, cotangent))
        if "all_gather" not in jaxpr or "reduce_scatter" not in jaxpr:
            raise AssertionError("the expert-parallel path (all_gather/psum_scatter) was not taken")
        got = value_and_grads(*args, cotangent)
    return max_err(got, want)


def check_indivisible_tokens():
    args, _ = problem(0)
    odd = (args[0][:60], args[1][:60], args[2][:60]) + args[3:]
    with jax.set_mesh(make_mesh((1, 1, 8, 1))):
        try:
            routed_experts(*odd, n_experts=E)
        except ValueError as e:
            if "x.shape=(60, 32)" not in str(e):
                raise AssertionError(f"message does not name the sizes: {e}") from e
            return 0.0
    raise AssertionError("N=60 on 8 token shards did not raise")


def check_model():
    cfg = r1jax.config.tiny()
    params = r1jax.models.init(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, cfg.vocab_size)
    forward = jax.jit(lambda p, t: r1jax.models.forward(cfg, p, t))
    want_logits, want_aux = forward(params, tokens)

    mesh = make_mesh((2, 1, 4, 1))
    mesh_axis = {"expert": "expert", "mlp": "tensor", "heads": "tensor", "vocab": "tensor"}
    specs = jax.tree.map(lambda axes: P(*(mesh_axis.get(a) for a in axes)),
                         r1jax.models.param_axes(cfg), is_leaf=lambda v: isinstance(v, tuple))
    with jax.set_mesh(mesh):
        sharded = jax.device_put(params, jax.tree.map(lambda s: NamedSharding(mesh, s), specs))
        sharded_tokens = jax.device_put(tokens, NamedSharding(mesh, P(("data", "fsdp", "expert"))))
        if "reduce_scatter" not in str(jax.make_jaxpr(forward)(sharded, sharded_tokens)):
            raise AssertionError("the model did not take the expert-parallel path")
        logits, aux = forward(sharded, sharded_tokens)
    if not np.array_equal(aux["expert_load"], want_aux["expert_load"]):
        raise AssertionError("expert loads differ")
    return max(max_err(logits, want_logits), max_err(aux["mtp_logits"], want_aux["mtp_logits"]))


if __name__ == "__main__":
    with jax.default_matmul_precision("highest"):
        uniform, uniform_cot = problem(0)
        for shape in MESHES:
            report(f"mesh{shape}", lambda: check_routed_experts(uniform, uniform_cot, make_mesh(shape)))
        skewed, skewed_cot = problem(1, skewed=True)
        report("skewed", lambda: check_routed_experts(skewed, skewed_cot, make_mesh((2, 1, 4, 1))))
        report("explicit_axes", lambda: check_routed_experts(
            uniform, uniform_cot, make_mesh((1, 2, 2, 2), AxisType.Explicit)))
        report("indivisible_tokens", check_indivisible_tokens)
        report("model", check_model)
