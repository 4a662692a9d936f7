"""The projection matmul's own backward (r1jax/nn/linear.py `matmul`): the weight gradient as one
x^T dy GEMM over the rows as stored.

Tolerance: the input gradient is autodiff's bit for bit (the same GEMM); the weight gradient
sums the same products in another order, so it is checked against numpy in float64 at 1e-5
relative to the gradient's largest entry (float32 sums of 96 products), as is autodiff's.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.nn.linear import matmul, project


def plain(x, w):
    return jnp.einsum("...k,kn->...n", x, w.astype(x.dtype))


def inputs(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    x, w, dy = rng.normal(size=(4, 24, 32)), rng.normal(size=(32, 40)), rng.normal(size=(4, 24, 40))
    return jnp.asarray(x, dtype), jnp.asarray(w, jnp.float32), jnp.asarray(dy, dtype), (x, w, dy)


def test_values_and_gradients_match_autodiff_and_float64():
    x, w, dy, (x64, w64, dy64) = inputs()
    y, vjp = jax.vjp(matmul, x, w)
    y_ref, vjp_ref = jax.vjp(plain, x, w)
    (dx, dw), (dx_ref, dw_ref) = vjp(dy), vjp_ref(dy)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    want = np.einsum("btk,btn->kn", x64, dy64)  # x^T dy in float64
    for got in (dw, dw_ref):
        assert float(np.abs(np.asarray(got, np.float64) - want).max()) <= 1e-5 * np.abs(want).max()
    assert dw.dtype == w.dtype and dx.dtype == x.dtype


def test_bf16_activations_keep_their_dtypes_and_autodiffs_rounding():
    """bf16 x with a float32 weight: the weight is cast for the GEMM, its gradient comes back in
    float32, and both gradients stay within bf16 rounding (8 bits) of autodiff's."""
    x, w, dy, _ = inputs(jnp.bfloat16)
    y, vjp = jax.vjp(matmul, x, w)
    (dx, dw), (dx_ref, dw_ref) = vjp(dy), jax.vjp(plain, x, w)[1](dy)
    assert y.dtype == dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    for got, ref in ((dx, dx_ref), (dw, dw_ref)):
        got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
        assert np.abs(got - ref).max() <= 2**-7 * np.abs(ref).max()


def test_project_uses_it_for_plain_weights_with_head_dims():
    """project (..., K) x (K, H, D) runs through matmul: gradients equal the float64 product's."""
    x, w, dy, (x64, w64, dy64) = inputs()
    w3 = w.reshape(32, 4, 10)
    dw = jax.grad(lambda w: jnp.sum(project(x, w, "bf16") * dy.reshape(4, 24, 4, 10)))(w3)
    want = np.einsum("btk,btn->kn", x64, dy64).reshape(32, 4, 10)
    assert dw.shape == (32, 4, 10)
    assert float(np.abs(np.asarray(dw, np.float64) - want).max()) <= 1e-5 * np.abs(want).max()


def test_weight_gradient_reads_dy_in_place():
    """The compiled weight gradient holds no transposed (N, rows) copy of dy: the copy XLA:CPU
    made before a slower dot when autodiff asked for the gradient as (N, K)."""
    x, w, dy, _ = inputs()
    grad_w = jax.jit(lambda x, w, dy: jax.vjp(matmul, x, w)[1](dy)[1])
    hlo = grad_w.lower(x, w, dy).compile().as_text()
    entry = hlo[hlo.index("\nENTRY"):]
    transposed_dy = re.findall(r"= f32\[40,96\]", entry)  # dy (4, 24, 40) as (N, rows)
    assert not transposed_dy, entry


def test_weight_gradient_transposes_x_without_recomputing_it():
    """The (K, rows) copy of x that the weight gradient's GEMM reads is a plain transpose of the
    normalised activations: XLA:CPU otherwise fuses it with the RMSNorm that made x and recomputes
    the norm in transposed order (3-4x slower than norm + transpose)."""
    def grads(x, s, w, dy):
        def normed_projection(x, s, w):
            return matmul(x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * s, w)
        return jax.vjp(normed_projection, x, s, w)[1](dy)

    x, w, dy, _ = inputs()
    hlo = jax.jit(grads).lower(x, jnp.ones(32), w, dy).compile().as_text()
    entry = hlo[hlo.index("\nENTRY"):]
    transposed_x = [line for line in entry.splitlines() if "= f32[32,96]" in line]  # (K, rows)
    assert transposed_x, entry
    for line in transposed_x:
        operands = re.search(r"(?:fusion|copy|transpose)\(([^)]*)\)", line).group(1).split(",")
        assert len(operands) == 1, line


def test_output_head_takes_it_in_float32_and_keeps_float32_logits_in_bf16():
    """The untied output head runs through matmul for float32 activations (gradients equal the
    float64 product's); bf16 activations still get float32 logits."""
    from r1jax.models.deepseek_v3 import output_logits

    x, w, dy, (x64, w64, dy64) = inputs()
    embed = jnp.zeros((40, 32))  # unused when the head is untied
    logits, vjp = jax.vjp(lambda h, w: output_logits(h, embed, w), x, w)
    dx, dw = vjp(dy)
    np.testing.assert_allclose(logits, np.einsum("btk,kn->btn", x64, w64), rtol=1e-5, atol=1e-4)
    want = np.einsum("btk,btn->kn", x64, dy64)
    assert float(np.abs(np.asarray(dw, np.float64) - want).max()) <= 1e-5 * np.abs(want).max()
    assert output_logits(x.astype(jnp.bfloat16), embed, w).dtype == jnp.float32
