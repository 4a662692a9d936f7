"""routed_experts: one device vs a dense reference; expert-parallel meshes vs one device.

The multi-device checks need 8 simulated CPU devices, which XLA_FLAGS can only create before jax
is first imported, so they run in a subprocess (tests/nn/moe_dispatch_multidevice.py) that prints
one JSON line per check.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.nn.moe_dispatch import routed_experts

MULTIDEVICE_SCRIPT = pathlib.Path(__file__).with_name("moe_dispatch_multidevice.py")
MULTIDEVICE_CHECKS = ["mesh(1, 1, 8, 1)", "mesh(2, 1, 4, 1)", "mesh(2, 2, 2, 1)",
                      "mesh(1, 2, 2, 2)", "skewed", "explicit_axes", "indivisible_tokens", "model"]


def dense_routed_experts(x, weights, indices, gate, up, down):
    """Every expert on every token, then the top-K combine: the definition, without dispatch."""
    h = jnp.einsum("nd,edf->nef", x, gate)
    u = jnp.einsum("nd,edf->nef", x, up)
    every = jnp.einsum("nef,efd->ned", jax.nn.silu(h) * u, down)  # (N, E, D)
    picked = jnp.take_along_axis(every, indices[:, :, None], axis=1)  # (N, K, D)
    return jnp.einsum("nk,nkd->nd", weights, picked)


def random_problem(n, d, f, e, k, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, size=(n, k)).astype(np.float32)
    indices = np.argsort(rng.uniform(size=(n, e)), axis=1)[:, :k].astype(np.int32)
    gate = (rng.normal(size=(e, d, f)) / np.sqrt(d)).astype(np.float32)
    up = (rng.normal(size=(e, d, f)) / np.sqrt(d)).astype(np.float32)
    down = (rng.normal(size=(e, f, d)) / np.sqrt(f)).astype(np.float32)
    return x, weights, indices, gate, up, down


@pytest.mark.parametrize("n,e,k", [(48, 8, 2), (37, 16, 4), (5, 4, 4)])
def test_one_device_matches_dense_reference_value_and_grads(n, e, k):
    x, weights, indices, gate, up, down = random_problem(n, 24, 12, e, k, seed=n)
    cotangent = np.random.default_rng(1).normal(size=(n, 24)).astype(np.float32)

    def projected(fn):
        return lambda *a: jnp.sum(fn(a[0], a[1], indices, *a[2:]) * cotangent)

    ours = lambda x, w, i, g, u, d: routed_experts(x, w, i, g, u, d, n_experts=e)  # noqa: E731
    with jax.default_matmul_precision("highest"):
        got = jax.value_and_grad(projected(ours), argnums=tuple(range(5)))(x, weights, gate, up, down)
        want = jax.value_and_grad(projected(dense_routed_experts), argnums=tuple(range(5)))(
            x, weights, gate, up, down)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_output_in_activation_dtype():
    x, weights, indices, gate, up, down = random_problem(16, 8, 4, 4, 2)
    y = routed_experts(jnp.asarray(x, jnp.bfloat16), weights, indices, gate, up, down, n_experts=4)
    assert y.dtype == jnp.bfloat16 and y.shape == (16, 8)


def test_unknown_precision_names_the_valid_ones():
    args = random_problem(8, 8, 4, 4, 2)
    with pytest.raises(ValueError, match=r"'fp8_typo' is unknown; use one of bf16, fp8_v3, fp8_per_tensor"):
        routed_experts(*args, n_experts=4, precision="fp8_typo")


def test_expert_count_mismatch_raises():
    args = random_problem(8, 8, 4, 4, 2)
    with pytest.raises(ValueError, match=r"n_experts=6 must match gate.shape=\(4, 8, 4\)"):
        routed_experts(*args, n_experts=6)


def run_multidevice_checks(directory):
    repo = MULTIDEVICE_SCRIPT.parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(MULTIDEVICE_SCRIPT)], capture_output=True, text=True,
                         timeout=600, cwd=repo, env=env)
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["check"]] = result
    return results, run.stderr[-3000:]


@pytest.fixture(scope="module")
def multidevice_results(once):
    return once("moe_dispatch_multidevice", run_multidevice_checks)


@pytest.mark.parametrize("check", MULTIDEVICE_CHECKS)
def test_expert_parallel_matches_one_device(multidevice_results, check):
    """Meshes (data, fsdp, expert, tensor): value and grads (x, weights, gate, up, down) of
    routed_experts, skewed routing (7/8 of tokens on one expert), an Explicit-axes mesh, the
    ValueError for N=60 on 8 token shards, and tiny-model logits under expert=4."""
    results, stderr = multidevice_results
    assert check in results, f"{check} did not report; stderr tail:\n{stderr}"
    assert "error" not in results[check], results[check]["error"]
    assert results[check]["max_err"] <= 1e-5, results[check]
