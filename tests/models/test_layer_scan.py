"""Layers under jax.lax.scan (scan_layers=True) compute what the Python loop computes, and the
train step's program stops growing with depth (r1jax/models/layer_scan.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from r1jax import config, models
from r1jax.models import deepseek_v3, dense, llama, qwen2
from r1jax.models.deepseek_v3 import DeepseekV3
from r1jax.models.layer_scan import layer_runs
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.state import init_state
from r1jax.train.steps import sft_step_fn
from tests.devices import run_with_devices

# Same ops in the same order, only compiled as a loop body: float32 agrees to rounding.
TOL = 1e-6

MODELS = {
    # 2 dense + 2 MoE layers (two scanned runs), MTP on.
    "deepseek_v3": config.tiny(num_layers=4, first_k_dense=2),
    "qwen2": qwen2.tiny(num_layers=3),
    "llama": llama.tiny(num_layers=3),
}


def assert_trees_close(got, want, name):
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape, f"{name}{jax.tree_util.keystr(path)}: {g.shape} != {w.shape}"
        err = np.abs(g - w).max(initial=0) / (1 + np.abs(w).max(initial=0))
        assert err <= TOL, f"{name}{jax.tree_util.keystr(path)}: relative error {err:.2e}"


def scanned_and_unrolled(cfg):
    return cfg.replace(scan_layers=True), cfg.replace(scan_layers=False)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_and_gradients_match_the_unrolled_loop(name):
    cfg = MODELS[name]
    params = models.init(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 1, cfg.vocab_size)
    mask = jnp.arange(12)[None, :] < jnp.array([[12], [9]])  # one right-padded row

    def loss(params, cfg):
        logits, aux = models.forward(cfg, params, tokens, attention_mask=mask)
        mtp = aux["mtp_logits"].std() if "mtp_logits" in aux else 0.0
        return logits.std() + mtp + 100 * aux["balance_loss"], (logits, aux)

    with jax.default_matmul_precision("highest"):
        results = [jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(params, c)
                   for c in scanned_and_unrolled(cfg)]
    (_, (logits, aux)), grads = results[0]
    (_, (want_logits, want_aux)), want_grads = results[1]
    assert np.abs(want_logits).max() > 0.1  # a reference that means something
    assert_trees_close(logits, want_logits, "logits")
    assert_trees_close(aux, want_aux, "aux")  # expert loads (L_moe, E) in layer order
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert_trees_close(grads, want_grads, "grads")
    if name == "deepseek_v3":
        assert aux["expert_load"].shape == (2, cfg.n_routed_experts)
        assert aux["mtp_logits"].shape[0] == 1
        assert float(jnp.abs(grads["layers"][3]["moe"]["gate"]).max()) > 0  # the last run trains


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cached_decode_matches_the_unrolled_loop(name, monkeypatch):
    """Prefill of a left-padded batch, then two one-token steps on the cache. Calls on a cache
    run unrolled by default (scan_this_call), so the scan of per-layer cache buffers is forced
    here to check it too."""
    cfg = MODELS[name]
    params = models.init(cfg, jax.random.key(0))
    prompt = jax.random.randint(jax.random.key(1), (2, 6), 1, cfg.vocab_size)
    mask = jnp.arange(6)[None, :] >= jnp.array([[0], [2]])
    for module in (deepseek_v3, dense):
        monkeypatch.setattr(module, "scan_this_call", lambda enabled, cache: enabled)
    outputs = []
    for c in scanned_and_unrolled(cfg):
        step = jax.jit(lambda p, t, m, cache, c=c: models.forward(c, p, t, attention_mask=m,
                                                                  cache=cache, with_mtp=False))
        logits, aux = step(params, prompt, mask, models.init_cache(cfg, 2, 10))
        steps = [logits]
        for token in (3, 5):
            one = jnp.ones((2, 1), bool)
            logits, aux = step(params, jnp.full((2, 1), token), one, aux["cache"])
            steps.append(logits)
        outputs.append((steps, aux["cache"]))
    assert_trees_close(outputs[0], outputs[1], "decode")


@pytest.mark.parametrize("name", ["deepseek_v3", "qwen2"])
def test_calls_on_a_cache_stay_unrolled(name):
    """A decode step writes each layer's cache buffer in place; a scan would copy the cache."""
    cfg = MODELS[name].replace(scan_layers=True)
    cache = models.init_cache(cfg, 2, 8)
    step = jax.jit(lambda p, t, cache: models.forward(cfg, p, t, cache=cache, with_mtp=False))
    text = step.lower(models.abstract_params(cfg), jnp.ones((2, 1), jnp.int32), cache).as_text()
    assert "stablehlo.while" not in text
    train = jax.jit(lambda p, t: models.forward(cfg, p, t)[0])
    tokens = jnp.ones((2, 4), jnp.int32)
    assert "stablehlo.while" in train.lower(models.abstract_params(cfg), tokens).as_text()


def test_runs_split_dense_from_moe_layers():
    model = nnx.eval_shape(lambda: DeepseekV3(config.tiny(num_layers=5, first_k_dense=2),
                                              rngs=nnx.Rngs(0)))
    assert layer_runs(model.layers) == [range(0, 2), range(2, 5)]
    dense = models.bind(qwen2.tiny(num_layers=3), models.abstract_params(qwen2.tiny(num_layers=3)))
    assert layer_runs(dense.layers) == [range(0, 3)]


def test_scan_layers_must_be_a_bool():
    with pytest.raises(ValueError, match="scan_layers='yes' must be True or False"):
        config.tiny(scan_layers="yes")
    with pytest.raises(ValueError, match="scan_layers=1 must be True or False"):
        qwen2.tiny(scan_layers=1)


def model_hlo_lines(cfg) -> int:
    """StableHLO lines of the gradient of a loss on the model's logits, lowered, not compiled."""
    params = models.abstract_params(cfg)
    tokens = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    grad = jax.jit(jax.grad(lambda p, t: models.forward(cfg, p, t)[0].mean()))
    return len(grad.lower(params, tokens).as_text().splitlines())


def train_step_hlo_lines(cfg) -> int:
    """StableHLO lines of the train step (AdamW, routing-bias rule), lowered, not compiled, on
    bench_compile.py's 2x32 tokens (with fewer, the expert GEMMs take the one-tile-per-expert
    layout of decoding, r1jax/nn/ragged_tiles.py, a smaller program than training's tiles)."""
    tx = make_optimizer(OptimConfig(), 10, models.param_roles(cfg))
    state = jax.eval_shape(lambda: init_state(cfg, tx, jax.random.key(0)))
    batch = {"inputs": jax.ShapeDtypeStruct((2, 32), jnp.int32),
             "targets": jax.ShapeDtypeStruct((2, 32), jnp.int32),
             "loss_mask": jax.ShapeDtypeStruct((2, 32), jnp.bool_)}
    step = jax.jit(sft_step_fn(cfg, tx, bias_update_speed=1e-3))
    return len(step.lower(state, batch).as_text().splitlines())


@pytest.mark.parametrize("name", ["deepseek_v3", "qwen2"])
def test_model_program_does_not_grow_with_depth(name):
    """Forward + backward: 3 and 8 layers hold the same scanned runs (DeepSeek-V3: 1 dense layer,
    then a run of MoE layers); only the stacking of per-layer params grows (~50 lines a layer)."""
    size = config.tiny if name == "deepseek_v3" else qwen2.tiny
    lines = {n: model_hlo_lines(size(num_layers=n, scan_layers=True)) for n in (3, 8)}
    unrolled_8 = model_hlo_lines(size(num_layers=8, scan_layers=False))
    assert lines[8] <= 1.2 * lines[3], lines
    assert unrolled_8 > 2 * lines[8], (unrolled_8, lines)  # the loop it replaces did grow


def test_train_step_grows_only_by_its_per_layer_optimizer_work():
    """The whole step still grows with depth: AdamW, clipping and the non-finite guard run per
    param leaf, and params are stored per layer. Scanning cuts the growth per layer by more than
    half (measured: 1.0k vs 2.3k lines per MoE layer of tiny)."""
    scanned = {n: train_step_hlo_lines(config.tiny(num_layers=n, scan_layers=True)) for n in (3, 8)}
    unrolled = {n: train_step_hlo_lines(config.tiny(num_layers=n, scan_layers=False))
                for n in (3, 8)}
    assert scanned[8] - scanned[3] < 0.5 * (unrolled[8] - unrolled[3]), (scanned, unrolled)


@pytest.mark.slow
def test_scanned_layers_on_sharded_meshes_match_one_device(once):
    """Stacking per-layer params that are split over fsdp / expert / tensor keeps the math, and
    the gradients come back per layer in the params' own shardings."""
    result = once("scan_multidevice", lambda d: run_with_devices(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "scan_multidevice.py"), 8))
    for mesh, r in result.items():
        assert r["loss_diff"] <= 1e-5 and r["grad_diff"] <= 1e-5, (mesh, r)
        assert "expert" in r["expert_spec"], (mesh, r)
