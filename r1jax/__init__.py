"""r1jax: DeepSeek-V3 and the DeepSeek-R1 recipe in JAX."""

__version__ = "0.1.0"
