"""Models: the DeepSeek-V3 family and the dense students (Qwen2, Llama 3) through one functional
API that dispatches on the config type (ModelConfig, Qwen2Config or LlamaConfig)."""

from r1jax.models.api import (abstract_params, bind, check_has_mtp, forward, init, init_cache,
                              init_mtp_cache, mtp_depth, mtp_draft, param_axes, param_roles,
                              update_routing_biases, with_decode_weights,
                              with_mtp_decode_weights)
from r1jax.models.llama import LlamaConfig
from r1jax.models.qwen2 import Qwen2Config

__all__ = ["LlamaConfig", "Qwen2Config", "abstract_params", "bind", "check_has_mtp", "forward",
           "init", "init_cache", "init_mtp_cache", "mtp_depth", "mtp_draft", "param_axes",
           "param_roles", "update_routing_biases", "with_decode_weights",
           "with_mtp_decode_weights"]
