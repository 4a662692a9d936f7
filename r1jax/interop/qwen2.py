"""Load and save Hugging Face Qwen2 checkpoints (Qwen2.5, DeepSeek-R1-Distill-Qwen).

`r1jax.interop.hf.load_checkpoint` / `save_checkpoint` come here for `model_type: "qwen2"` and
for a `Qwen2Config`. The tensors are the dense decoder's (dense.py, with q/k/v biases); the
config.json mapping is qwen2_config.py.
"""

from __future__ import annotations

import functools

from r1jax.interop import dense, qwen2_config

load_checkpoint = functools.partial(dense.load_checkpoint, config_format=qwen2_config)
save_checkpoint = functools.partial(dense.save_checkpoint, config_format=qwen2_config)
params_to_hf = dense.params_to_hf
