"""Models: the DeepSeek-V3 family and the dense Qwen2 student through one functional API that
dispatches on the config type (ModelConfig or Qwen2Config)."""

from r1jax.models.api import (abstract_params, bind, forward, init, init_cache, mtp_depth,
                              param_axes, param_roles, update_routing_biases)
from r1jax.models.qwen2 import Qwen2Config

__all__ = ["Qwen2Config", "abstract_params", "bind", "forward", "init", "init_cache", "mtp_depth",
           "param_axes", "param_roles", "update_routing_biases"]
