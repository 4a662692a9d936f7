"""Load and save Hugging Face Llama 3.x checkpoints (LlamaForCausalLM, DeepSeek-R1-Distill-Llama).

`r1jax.interop.hf.load_checkpoint` / `save_checkpoint` come here for `model_type: "llama"` and
for a `LlamaConfig`. The tensors are the dense decoder's (dense.py, without biases); the
config.json mapping, Llama 3.1's RoPE scaling included, is llama_config.py.
"""

from __future__ import annotations

import functools

from r1jax.interop import dense, llama_config

load_checkpoint = functools.partial(dense.load_checkpoint, config_format=llama_config)
save_checkpoint = functools.partial(dense.save_checkpoint, config_format=llama_config)
params_to_hf = dense.params_to_hf
