"""A first look at the model on CPU: build the tiny DeepSeek-V3, run a forward pass, decode
greedily on the compressed MLA cache, and print the sizes that matter at 671B.

  python experiments/demo.py [--tokens 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import single_process_only  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from r1jax import config, models  # noqa: E402
from r1jax.models.counting import count_params  # noqa: E402


def greedy_decode(cfg, params, prompt, steps: int):
    """Prefill the prompt into the latent cache, then one token at a time (absorbed MLA)."""
    b, t = prompt.shape
    step = jax.jit(lambda p, tok, c: models.forward(cfg, p, tok, cache=c))
    cache = models.init_cache(cfg, b, t + steps)
    logits, aux = step(params, prompt, cache)
    out = [jnp.argmax(logits[:, -1], -1)]
    for _ in range(steps - 1):
        logits, aux = step(params, out[-1][:, None], aux["cache"])
        out.append(jnp.argmax(logits[:, -1], -1))
    return jnp.stack(out, axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    single_process_only("experiments/demo.py")

    big = config.deepseek_v3_671b()
    counts = count_params(big)
    print("DeepSeek-V3 671B (abstract, nothing allocated):")
    print(f"  total params      {counts['total']:,}  (+ MTP: {counts['total_with_mtp']:,})")
    print(f"  activated / token {counts['activated']:,}")
    latent, full = big.latent_cache_values_per_token(), big.full_kv_cache_values_per_token()
    print(f"  KV cache / token / layer: latent {latent} values ({2 * latent} B bf16) vs full K/V "
          f"{full} values ({2 * full} B) -> {full / latent:.0f}x smaller")

    cfg = config.tiny()
    params = models.init(cfg, jax.random.key(0))
    prompt = jax.random.randint(jax.random.key(1), (2, 8), 0, cfg.vocab_size)
    t0 = time.perf_counter()
    logits, aux = jax.jit(lambda p, x: models.forward(cfg, p, x))(params, prompt)
    print(f"\ntiny model: {count_params(cfg)['total']:,} params; forward logits {logits.shape}, "
          f"MTP logits {aux['mtp_logits'].shape}, expert load per MoE layer {aux['expert_load'].tolist()}")
    tokens = greedy_decode(cfg, params, prompt, args.tokens)
    dt = time.perf_counter() - t0
    print(f"greedy decode on the latent cache: {tokens.shape[1]} tokens x {tokens.shape[0]} rows "
          f"in {dt:.1f}s (incl. compile)\n{tokens}")


if __name__ == "__main__":
    main()
