"""Evaluation: pass@1, unbiased pass@k, cons@k (majority vote) and markdown tables."""

from r1jax.eval.pass_at_k import (cons_at_k, cons_at_k_verified, majority_vote, pass_at_1, pass_at_k,
                                  pass_at_k_estimator)
from r1jax.eval.tables import format_table

__all__ = [
    "cons_at_k",
    "cons_at_k_verified",
    "format_table",
    "majority_vote",
    "pass_at_1",
    "pass_at_k",
    "pass_at_k_estimator",
]
