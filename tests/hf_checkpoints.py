"""Tiny random Hugging Face checkpoint directories built locally, as a user's would be: a
transformers model saved with `save_pretrained` (config.json + safetensors) beside a byte-level BPE
`tokenizer.json` trained on the embedded corpus and a ChatML chat template, saved by
`PreTrainedTokenizerFast.save_pretrained`.

The template is Qwen's ChatML without the default system prompt (R1-Distill's recommendation: no
system prompt), so a prompt stays within the miniature's lengths.
"""

from __future__ import annotations

import pathlib

import tokenizers
from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors, trainers

from r1jax.data.corpus import pretraining_documents
from tests.data.tokenizer_builders import QWEN_REGEX

CHATML = ("{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
          "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# The shapes of the recipe's tiny students (r1jax/models/qwen2.py, llama.py).
SHAPES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-6,
              tie_word_embeddings=False)


def write_tokenizer(directory: pathlib.Path, vocab_size: int = 400) -> None:
    """A byte-level BPE of Qwen2's pipeline trained on the embedded corpus (worked arithmetic),
    eos <|im_end|>, the ChatML template."""
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    # Qwen2's pipeline: transformers rebuilds it for a directory whose config.json says qwen2, so
    # a tokenizer.json with another one would tokenize differently there.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(pretraining_documents(0, 2000), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                            pad_token="<|endoftext|>", chat_template=CHATML,
                            ).save_pretrained(str(directory))


def write_model(directory: pathlib.Path, architecture: str, vocab_size: int, seed: int = 0,
                **overrides) -> None:
    """A random `Qwen2ForCausalLM` or `LlamaForCausalLM` of the tiny students' shapes, or a tiny
    `DeepseekV3ForCausalLM` (MLA, 8 routed experts, YaRN: tests/hf_reference.py)."""
    import torch
    import transformers

    if architecture == "deepseek_v3":
        from tests.hf_reference import build_hf_model

        build_hf_model(seed, vocab_size=vocab_size, **overrides).save_pretrained(str(directory))
        return
    config_class, model_class = {
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}[architecture]
    config = config_class(**{**SHAPES, "vocab_size": vocab_size, **overrides})
    from tests.hf_reference import randomize_weights

    torch.manual_seed(seed)
    model = model_class(config).float().eval()
    randomize_weights(model, seed)  # logits far from uniform: greedy tokens decided by the weights
    model.save_pretrained(str(directory))


def build_checkpoint(directory: pathlib.Path, architecture: str = "qwen2", seed: int = 0, *,
                     tokenizer_from: pathlib.Path | None = None, tokenizer_vocab: int = 400,
                     **overrides) -> pathlib.Path:
    """A checkpoint directory: tokenizer files (trained with `tokenizer_vocab` tokens, or copied
    from `tokenizer_from`), chat
    template, config.json and safetensors. The embedding table has a few rows past the
    tokenizer's vocabulary, as released models do."""
    from r1jax.data import load_tokenizer
    from r1jax.recipe.export import copy_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is None:
        write_tokenizer(directory, tokenizer_vocab)
    else:
        copy_tokenizer(str(tokenizer_from), str(directory))
    vocab = load_tokenizer(str(directory)).vocab_size
    write_model(directory, architecture, vocab_size=vocab + 16, seed=seed, **overrides)
    return directory
