"""Sharding, memory and communication plan of a model on a mesh, checked on paper: every number
comes from abstract shapes, the project's own shardings on a `jax.sharding.AbstractMesh`, and
stated link and GEMM rates. Nothing is allocated. See docs/scaling.md."""

from r1jax.plan.hardware import H100, H800, HARDWARE, Hardware
from r1jax.plan.paper import format_paper_comparison, paper_comparison
from r1jax.plan.report import format_plan, make_plan
from r1jax.plan.setup import DISPATCHES, Setup

__all__ = ["Setup", "DISPATCHES", "Hardware", "H800", "H100", "HARDWARE", "make_plan",
           "format_plan", "paper_comparison", "format_paper_comparison"]
