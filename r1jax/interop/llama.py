"""Load and save Hugging Face Llama 3.x checkpoints (LlamaForCausalLM, DeepSeek-R1-Distill-Llama).

`r1jax.interop.hf.load_checkpoint` / `save_checkpoint` come here for `model_type: "llama"` and
for a `LlamaConfig`. The tensors are the dense decoder's (dense.py, without biases); the
config.json mapping, Llama 3.1's RoPE scaling included, is llama_config.py.
"""

from __future__ import annotations

from r1jax.interop import dense, llama_config
from r1jax.interop.dense import params_to_hf  # noqa: F401  (same tensors as every dense decoder)
from r1jax.models.llama import LlamaConfig


def load_checkpoint(path: str, hf_config: dict, *, keep_fp8: bool = False,
                    **config_overrides) -> tuple[LlamaConfig, dict]:
    """(cfg, params) from the Llama checkpoint directory `path` whose config.json is `hf_config`,
    cast to cfg.param_dtype."""
    return dense.load_checkpoint(path, hf_config, llama_config, keep_fp8=keep_fp8,
                                 **config_overrides)


def save_checkpoint(cfg: LlamaConfig, params: dict, path: str, **options) -> None:
    """Write config.json + safetensors that `transformers` LlamaForCausalLM loads (options:
    dtype, fp8, max_shard_bytes of `dense.save_checkpoint`)."""
    dense.save_checkpoint(cfg, params, path, llama_config, **options)
