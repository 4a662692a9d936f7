"""Numeric comparison shared by the kernel-formulation tests."""

import numpy as np


def assert_close(got, want, name: str, tol: float) -> None:
    """max |got - want| / (1 + |want|) <= tol, in float64; `want` must not be near zero
    everywhere (a tiny reference would make any answer pass)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.abs(want).max() > 0.1, f"{name}: reference too small to mean anything"
    err = np.abs(got - want) / (1 + np.abs(want))
    assert err.max() <= tol, f"{name}: max relative error {err.max():.2e} > {tol}"
