"""Models: the DeepSeek-V3 family through one functional API."""

from r1jax.models.api import abstract_params, bind, forward, init, init_cache, param_axes

__all__ = ["abstract_params", "bind", "forward", "init", "init_cache", "param_axes"]
