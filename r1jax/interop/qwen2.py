"""Load and save Hugging Face Qwen2 checkpoints (Qwen2.5, DeepSeek-R1-Distill-Qwen).

`r1jax.interop.hf.load_checkpoint` / `save_checkpoint` come here for `model_type: "qwen2"` and
for a `Qwen2Config`. The tensors are the dense decoder's (dense.py, with q/k/v biases); the
config.json mapping is qwen2_config.py.
"""

from __future__ import annotations

from r1jax.interop import dense, qwen2_config
from r1jax.interop.dense import params_to_hf  # noqa: F401  (same tensors as every dense decoder)
from r1jax.models.qwen2 import Qwen2Config


def load_checkpoint(path: str, hf_config: dict, *, keep_fp8: bool = False,
                    **config_overrides) -> tuple[Qwen2Config, dict]:
    """(cfg, params) from the Qwen2 checkpoint directory `path` whose config.json is `hf_config`,
    cast to cfg.param_dtype."""
    return dense.load_checkpoint(path, hf_config, qwen2_config, keep_fp8=keep_fp8,
                                 **config_overrides)


def save_checkpoint(cfg: Qwen2Config, params: dict, path: str, **options) -> None:
    """Write config.json + safetensors that `transformers` Qwen2ForCausalLM loads (options:
    dtype, fp8, max_shard_bytes of `dense.save_checkpoint`)."""
    dense.save_checkpoint(cfg, params, path, qwen2_config, **options)
