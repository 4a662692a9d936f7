"""`kernels="pallas"` equals `kernels="xla"`: forward, cached decoding, MoE gradients, lowering.

The Pallas kernels run in the Mosaic GPU interpreter on CPU (`kernels="pallas_interpret"`);
`kernels="pallas"` is lowered for CUDA. Tolerance: the relative Frobenius error
||pallas - xla|| / ||xla|| <= 1e-2 for bf16 activations, the bound the kernel tests use
(tests/pallas_kernels/kernel_testing.py). The test model's head dims (d_qk = 32 + 32, d_v = 64,
C = 64, R = 32) meet the kernels' rules (`check_support` in pallas_kernels/<op>/mosaic_gpu.py);
one dense and one MoE layer, no MTP, keep the interpreter's run short.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels._common
import pallas_kernels.fp8_block_gemm
import r1jax.nn.linear
from r1jax import config, models
from r1jax.models.deepseek_v3 import attention_mask_for
from r1jax.nn import kernels
from r1jax.nn.mla import contiguous_cache_range, right_padded_causal_lengths
from r1jax.nn.moe_dispatch import routed_experts
from r1jax.rollout.sampling import SamplingConfig, sample
from tests.pallas_kernels.kernel_testing import fresh_interpreter_state, lower_for_cuda, mosaic_calls

BF16_TOL = 1e-2

XLA_CFG = config.tiny(dtype="bfloat16", num_layers=2, first_k_dense=1, num_mtp_modules=0,
                      qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=64, kv_lora_rank=64)
PALLAS_CFG = XLA_CFG.replace(kernels="pallas")
INTERPRET_CFG = XLA_CFG.replace(kernels="pallas_interpret")


def rel_err(x, ref) -> float:
    x = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
    ref = np.asarray(jnp.asarray(ref, jnp.float32), np.float64)
    assert np.all(np.isfinite(x)), "non-finite values on the Pallas path"
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture
def interpreter():
    with fresh_interpreter_state():
        yield


@pytest.fixture(scope="module")
def params():
    return jax.jit(models.init, static_argnums=0)(XLA_CFG, jax.random.key(0))


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the model's calls into r1jax.nn.kernels while tracing: proof the wiring is reached."""
    calls = collections.Counter()
    for name in ("grouped_matmul", "causal_attention", "latent_attention"):
        def counted(*args, _op=getattr(kernels, name), _name=name, **kwargs):
            calls[_name] += 1
            return _op(*args, **kwargs)
        monkeypatch.setattr(kernels, name, counted)
    return calls


@pytest.fixture
def decode_kernel_runs(monkeypatch):
    """Counts, per query length T, the executions (not traces) of the decode-kernel branch of the
    run-time mask check in mla.py: proof that `contiguous_cache_range` found the mask fits."""
    runs = collections.Counter()
    op = kernels.latent_attention

    def counted(q, *args, **kwargs):
        jax.debug.callback(lambda: runs.update([q.shape[1]]))  # runs only if the cond takes it
        return op(q, *args, **kwargs)

    monkeypatch.setattr(kernels, "latent_attention", counted)
    return runs


def test_config_validates_kernels():
    with pytest.raises(ValueError, match=r"kernels='triton' must be one of "
                                         r"\('xla', 'pallas', 'pallas_interpret', 'xla_reference'\)"):
        config.tiny(kernels="triton")
    for value in ("pallas", "pallas_interpret"):  # float32 activations cannot feed the bf16 kernels
        with pytest.raises(ValueError, match=f"kernels='{value}' runs bf16 kernels: set dtype='bfloat16'"):
            config.tiny(kernels=value)
    assert kernels.kernel_choice(INTERPRET_CFG.kernels) == kernels.KernelChoice(pallas=True, interpret=True)
    assert kernels.kernel_choice(PALLAS_CFG.kernels) == kernels.KernelChoice(pallas=True)
    assert kernels.kernel_choice(XLA_CFG.kernels) == kernels.XLA
    # The plain formulations need no bf16: they are the float32 baseline.
    reference = config.tiny(kernels="xla_reference")
    assert kernels.kernel_choice(reference.kernels) == kernels.KernelChoice(reference=True)


def test_mask_conditions_for_the_attention_kernels():
    t = 6
    right = jnp.array([[1] * 6, [1] * 4 + [0] * 2], jnp.bool_)
    lengths, fits = right_padded_causal_lengths(attention_mask_for(right, None, None, None, t))
    assert bool(fits) and lengths.tolist() == [6, 4]
    left = jnp.array([[1] * 6, [0] * 2 + [1] * 4], jnp.bool_)
    assert not bool(right_padded_causal_lengths(attention_mask_for(left, None, None, None, t))[1])
    segments = jnp.array([[0, 0, 0, 1, 1, 1]] * 2)
    packed = attention_mask_for(jnp.ones((2, t), jnp.bool_), segments, None, None, t)
    assert not bool(right_padded_causal_lengths(packed)[1])
    # Cache of 8 slots, 5 filled, 2 new tokens at index 5: row 1's first slot is left padding.
    valid = jnp.array([[1] * 7 + [0], [0] + [1] * 6 + [0]], jnp.bool_)
    starts, lengths, fits = contiguous_cache_range(attention_mask_for(None, None, valid, 5, 2))
    assert bool(fits) and starts.tolist() == [0, 1] and lengths.tolist() == [7, 7]
    holed = valid.at[0, 2].set(False)  # a hole inside row 0's run: no (start, length) describes it
    assert not bool(contiguous_cache_range(attention_mask_for(None, None, holed, 5, 2))[2])
    # The sampler (r1jax/rollout/sampling.py) over 4 left-padded prompts of P = 4 in a 7-slot cache.
    prompts = jnp.array([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], jnp.bool_)
    cache = jnp.zeros((4, 7), jnp.bool_).at[:, :4].set(prompts)
    # Prefill (T = P): pad queries see nothing (zeros on both paths); row 3 is all padding.
    starts, lengths, fits = contiguous_cache_range(attention_mask_for(prompts, None, cache, 0, 4))
    assert bool(fits) and starts.tolist() == [0, 2, 3, 0] and lengths.tolist() == [4, 4, 4, 0]
    # Step 2 (T = 1, index 6): row 0 stopped at step 1, so slot 6 is invalid and its run ends at 6.
    cache = cache.at[:, 4:].set(jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]], jnp.bool_))
    starts, lengths, fits = contiguous_cache_range(attention_mask_for(None, None, cache, 6, 1))
    assert bool(fits) and starts.tolist() == [0, 2, 3, 4] and lengths.tolist() == [6, 7, 7, 7]


def test_forward_logits_match_xla(params, interpreter, kernel_calls):
    b, t = 2, 32
    tokens = jax.random.randint(jax.random.key(1), (b, t), 0, XLA_CFG.vocab_size)
    mask = np.ones((b, t), np.int32)
    mask[1, 20:] = 0  # right padding: the attention kernel gets lengths [32, 20]
    # The mask the layers see passes the run-time check: the kernel branch of the cond runs.
    lengths, fits = right_padded_causal_lengths(attention_mask_for(jnp.asarray(mask, bool), None,
                                                                   None, None, t))
    assert bool(fits) and lengths.tolist() == [32, 20]

    def logits(cfg):
        return lambda p, tok, m: models.forward(cfg, p, tok, attention_mask=m)[0]

    want = jax.jit(logits(XLA_CFG))(params, tokens, mask)
    assert not kernel_calls
    got = jax.jit(logits(INTERPRET_CFG))(params, tokens, mask)
    # One attention kernel per layer; two grouped GEMMs in the MoE layer ([gate | up], down).
    assert kernel_calls == {"causal_attention": 2, "grouped_matmul": 2}
    assert got.shape == want.shape == (b, t, XLA_CFG.vocab_size)
    assert rel_err(got, want) <= BF16_TOL


def test_kernel_choice_is_part_of_the_jit_cache_key(params, interpreter, kernel_calls):
    """The interpreter is configuration, not context: one jitted forward, traced once per config,
    runs the kernels exactly for the config whose `kernels` asks for them."""
    forward = jax.jit(models.forward, static_argnums=0)
    tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, XLA_CFG.vocab_size)
    want = forward(XLA_CFG, params, tokens)[0]
    assert not kernel_calls
    got = forward(INTERPRET_CFG, params, tokens)[0]  # a new cache entry: traced with the kernels
    assert kernel_calls == {"causal_attention": 2, "grouped_matmul": 2}
    assert rel_err(got, want) <= BF16_TOL
    again = forward(XLA_CFG, params, tokens)[0]  # the XLA entry, from the cache: no kernel
    assert kernel_calls == {"causal_attention": 2, "grouped_matmul": 2}
    np.testing.assert_array_equal(np.asarray(again), np.asarray(want))


def test_unsupported_head_dims_keep_the_xla_attention(interpreter, kernel_calls):
    """The tiny model's heads break the kernels' rules (d_qk = 16 + 8 and d_v = 16 are not multiples
    of 64; R = 8 gives 16-byte SMEM rows): with kernels="pallas_interpret" attention takes the
    XLA einsums, bit for bit, without and with a cache. Dense layers only, so no grouped GEMM
    runs either."""
    cfg = config.tiny(dtype="bfloat16", num_layers=2, first_k_dense=2, num_mtp_modules=0)
    params = jax.jit(models.init, static_argnums=0)(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(5), (2, 8), 0, cfg.vocab_size)

    def logits(cfg):  # the naive path (no cache), then the absorbed path over a cache
        naive = jax.jit(lambda p, tok: models.forward(cfg, p, tok)[0])(params, tokens)
        cache = models.init_cache(cfg, 2, 64, jnp.bfloat16)
        absorbed = jax.jit(lambda p, tok, c: models.forward(cfg, p, tok, cache=c)[0])
        return naive, absorbed(params, tokens, cache)

    want = logits(cfg)
    got = logits(cfg.replace(kernels="pallas_interpret"))
    assert not kernel_calls
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_prefill_and_decode_match_xla(params, interpreter, kernel_calls):
    b, prefill, steps, max_len = 2, 8, 2, 64  # a 64-slot cache is one block of the decode kernel
    tokens = jax.random.randint(jax.random.key(2), (b, prefill + steps), 0, XLA_CFG.vocab_size)
    # Unpadded rows: the written cache slots are a valid prefix, so the kernel branch runs.
    for index, t in [(0, prefill), (prefill, 1)]:  # the prefill call, then the first step
        written = jnp.broadcast_to(jnp.arange(max_len) < index + t, (b, max_len))  # (B, S)
        assert bool(contiguous_cache_range(attention_mask_for(None, None, written, index, t))[2])

    def generate(cfg):
        step = jax.jit(lambda p, tok, c: models.forward(cfg, p, tok, cache=c))
        cache = models.init_cache(cfg, b, max_len, jnp.bfloat16)
        out = []
        for lo, hi in [(0, prefill)] + [(i, i + 1) for i in range(prefill, prefill + steps)]:
            logits, aux = step(params, tokens[:, lo:hi], cache)
            out.append(logits)
            cache = aux["cache"]
        return jnp.concatenate(out, axis=1)

    want = generate(XLA_CFG)
    assert not kernel_calls
    got = generate(INTERPRET_CFG)
    # Two traces (prefill, then T = 1 steps), each: mla_decode per layer + two grouped GEMMs.
    assert kernel_calls == {"latent_attention": 2 * 2, "grouped_matmul": 2 * 2}
    assert got.shape == want.shape == (b, prefill + steps, XLA_CFG.vocab_size)
    for i in range(prefill - 1, prefill + steps):  # the last prefill position, then each step
        assert rel_err(got[:, i], want[:, i]) <= BF16_TOL, i


def test_sampling_left_padded_prompts_matches_xla(params, interpreter, decode_kernel_runs):
    """Rollouts left-pad prompts: the decode kernel runs on them (per-row starts), for the prefill
    and every step, finished rows included, with XLA's greedy tokens and logprobs."""
    p, n = 6, 3
    rng = np.random.default_rng(5)
    prompts = jnp.asarray(rng.integers(1, XLA_CFG.vocab_size, (3, p)), jnp.int32)
    pmask = jnp.asarray(np.arange(p)[None] >= np.array([[0], [2], [5]]))  # 0, 2 and 5 pad tokens
    prompts = jnp.where(pmask, prompts, 0)
    run = lambda cfg, scfg: sample(cfg, scfg, params, prompts, pmask, jax.random.key(0))
    first = run(XLA_CFG, SamplingConfig(max_new_tokens=1, greedy=True))["tokens"][:, 0]
    # Row 0's first token stops it, so later steps carry a finished row (an invalid new slot).
    assert int(first[0]) not in first[1:].tolist()
    scfg = SamplingConfig(max_new_tokens=n, greedy=True, stop_ids=(int(first[0]),))
    want = run(XLA_CFG, scfg)
    assert want["lengths"].tolist()[0] == 1 and min(want["lengths"].tolist()[1:]) > 1
    assert not decode_kernel_runs
    got = run(INTERPRET_CFG, scfg)
    # The kernel branch ran in each of the 2 layers: the prefill (T = P), then the n steps.
    assert decode_kernel_runs == {p: 2, 1: 2 * n}
    np.testing.assert_array_equal(np.asarray(got["tokens"]), np.asarray(want["tokens"]))
    np.testing.assert_array_equal(np.asarray(got["mask"]), np.asarray(want["mask"]))
    m = np.asarray(want["mask"])
    assert rel_err(np.asarray(got["logprobs"])[m], np.asarray(want["logprobs"])[m]) <= BF16_TOL


def test_moe_gradients_match_xla(interpreter, kernel_calls):
    n, d, f, e, k = 48, 64, 32, 8, 2
    kx, kw, ki, kg, ku, kd, kc = jax.random.split(jax.random.key(3), 7)
    x = jax.random.normal(kx, (n, d), jnp.bfloat16)
    weights = jax.random.uniform(kw, (n, k), jnp.float32)
    # K distinct experts per token, never expert 5: an empty group must get a zero gradient.
    experts = jnp.array([0, 1, 2, 3, 4, 6, 7])
    order = jax.random.permutation(ki, jnp.tile(jnp.arange(e - 1), (n, 1)), axis=1,
                                   independent=True)  # (N, E-1)
    indices = experts[order[:, :k]]  # (N, K)
    gate = (jax.random.normal(kg, (e, d, f)) * d ** -0.5).astype(jnp.bfloat16)
    up = (jax.random.normal(ku, (e, d, f)) * d ** -0.5).astype(jnp.bfloat16)
    down = (jax.random.normal(kd, (e, f, d)) * f ** -0.5).astype(jnp.bfloat16)
    cotangent = jax.random.normal(kc, (n, d), jnp.float32)

    def loss(choice):
        def fn(x, weights, gate, up, down):
            y = routed_experts(x, weights, indices, gate, up, down, n_experts=e,
                               choice=choice)  # (N, D)
            return jnp.sum(y.astype(jnp.float32) * cotangent)
        return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3, 4)))

    want_loss, want = loss(kernels.kernel_choice("xla"))(x, weights, gate, up, down)
    assert not kernel_calls
    got_loss, got = loss(kernels.kernel_choice("pallas_interpret"))(x, weights, gate, up, down)
    # [gate | up] and down; the backward runs the kernel's custom_vjp
    assert kernel_calls == {"grouped_matmul": 2}
    assert abs(float(got_loss) - float(want_loss)) <= BF16_TOL * abs(float(want_loss))
    for name, g, w in zip(["x", "weights", "gate", "up", "down"], got, want):
        assert g.shape == w.shape, name
        assert rel_err(g, w) <= BF16_TOL, name
    np.testing.assert_array_equal(np.asarray(got[2][5], np.float32), 0.0)  # empty group: no grad


def test_model_lowers_for_hopper_with_compiled_kernels(params, monkeypatch):
    """Outside the interpreter, on an sm_90 GPU, the model's kernels (with the compiled block
    sizes) lower to Mosaic GPU custom calls: training step and decoding, checked on this host."""
    monkeypatch.setattr(pallas_kernels._common, "on_hopper", lambda: True)
    tokens = jnp.zeros((2, 32), jnp.int32)
    cache = models.init_cache(PALLAS_CFG, 2, 64, jnp.bfloat16)

    def loss(p, tok):
        return models.forward(PALLAS_CFG, p, tok)[0].astype(jnp.float32).mean()

    # Distinct kernels (equal shapes share one lowered function): attention forward, dQ and
    # dK/dV; the grouped GEMM forward, dgrad and dW for the (D -> 2F: gate and up) and (F -> D)
    # shapes.
    assert mosaic_calls(lower_for_cuda(jax.grad(loss), params, tokens)) == 3 + 2 * 3
    decode = lambda p, tok, c: models.forward(PALLAS_CFG, p, tok, cache=c)[0]
    # mla_decode and the two grouped GEMM shapes.
    assert mosaic_calls(lower_for_cuda(decode, params, tokens[:, :1], cache)) == 1 + 2
    # Without a Hopper GPU the same config runs plain XLA (every kernel's platform rule).
    monkeypatch.setattr(pallas_kernels._common, "on_hopper", lambda: False)
    assert mosaic_calls(lower_for_cuda(jax.grad(loss), params, tokens)) == 0


FP8_XLA_CFG = XLA_CFG.replace(precision="fp8_v3")
FP8_PALLAS_CFG = PALLAS_CFG.replace(precision="fp8_v3")
FP8_INTERPRET_CFG = INTERPRET_CFG.replace(precision="fp8_v3")


def test_fp8_projections_all_request_the_kernel(params, monkeypatch):
    """Every FP8 projection of the model (MLA q_a, q_b, kv_a, kv_b, o; the dense and the shared
    expert SwiGLU) passes `cfg.kernels` on; the routed experts keep their own FP8 grouped GEMM."""
    seen = []

    def recording(x, w, recipe, *, kernels="xla", **kwargs):
        seen.append(kernels)
        return fp8_matmul(x, w, recipe, kernels=kernels, **kwargs)

    fp8_matmul = r1jax.nn.linear.fp8_matmul
    monkeypatch.setattr(r1jax.nn.linear, "fp8_matmul", recording)
    tokens = jnp.zeros((2, 8), jnp.int32)
    jax.eval_shape(lambda p: models.forward(FP8_PALLAS_CFG, p, tokens)[0], params)
    per_layer = 5  # q_a, q_b, kv_a, kv_b, o
    ffn = 3 * (XLA_CFG.first_k_dense + (XLA_CFG.num_layers - XLA_CFG.first_k_dense)
               * (XLA_CFG.n_shared_experts > 0))
    assert seen == ["pallas"] * (per_layer * XLA_CFG.num_layers + ffn)


def test_fp8_forward_logits_match_xla(params, interpreter, kernel_calls, monkeypatch):
    """precision="fp8_v3": the projections' FP8 GEMMs on fp8_block_gemm (interpreter) give the
    logits of the XLA emulation.

    The bf16 attention kernels are switched off here: their bf16 rounding differences (~1e-3)
    flip E4M3 roundings of the next layer's activations (3-bit mantissas), which compounds to a
    few percent over layers and would hide what this test checks. The FP8 GEMMs alone differ from
    the emulation only in FP32 summation order (tests/nn/test_fp8_kernel_path.py).
    """
    monkeypatch.setattr(kernels, "use_causal_attention", lambda *a, **kw: False)
    monkeypatch.setattr(kernels, "use_latent_attention", lambda *a, **kw: False)
    gemm_shapes = set()
    kernel = pallas_kernels.fp8_block_gemm.fp8_block_gemm

    def counted(a, a_scale, b, b_scale, **kwargs):
        gemm_shapes.add((a.shape, b.shape))
        return kernel(a, a_scale, b, b_scale, **kwargs)

    monkeypatch.setattr(pallas_kernels.fp8_block_gemm, "fp8_block_gemm", counted)
    jax.clear_caches()  # fp8_matmul's jitted core must be traced here, where the count is taken
    b, t = 2, 16
    tokens = jax.random.randint(jax.random.key(2), (b, t), 0, XLA_CFG.vocab_size)

    def logits(cfg):
        return jax.jit(lambda p, tok: models.forward(cfg, p, tok)[0])

    want = logits(FP8_XLA_CFG)(params, tokens)
    got = logits(FP8_INTERPRET_CFG)(params, tokens)
    assert not kernel_calls  # attention on XLA; the experts keep the FP8 grouped GEMM
    # The distinct Fprop GEMMs, (M, K) x (N, K) with K and N padded to 128 (M = 32 tokens, D = 64):
    # q_a (D->32), kv_a (D->C+R = 96), the SwiGLUs (D->128, 128->D, 32->D); q_b (32->H*(N+R) = 256),
    # kv_b (C->H*(N+V) = 384) and o (H*V = 256->D): the MLA projections run on the kernel too.
    m = b * t
    assert gemm_shapes == {((m, 128), (128, 128)), ((m, 128), (256, 128)), ((m, 128), (384, 128)),
                           ((m, 256), (128, 256))}
    err = rel_err(got, want)
    assert err <= BF16_TOL
