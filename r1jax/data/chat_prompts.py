"""A task's prompt and target completion as token ids, in the format of the tokenizer's model.

Sampling (rollouts, GRPO, rejection sampling, evaluation) and SFT rows build their prompts here,
so a model is always conditioned the way it was trained:
- the embedded sentencepiece tokenizer, and a checkpoint tokenizer that has no chat template:
  the embedded R1-Zero format (`chat.format_prompt`): bos (where the tokenizer has one) +
  "instruction\\nUser: problem\\nAssistant:", and the completion " <think> .. </answer>";
- a checkpoint tokenizer with a chat template: one user message, the problem followed by the
  R1-Zero instruction (R1 puts every instruction in the user turn and uses no system prompt
  [R1 §2.4 usage recommendations]), rendered with `add_generation_prompt=True` exactly as
  transformers' `apply_chat_template` renders it, then tokenized without added special tokens
  (the template writes bos itself where the model has one). The completion follows without the
  leading space.
Templates of reasoning models open the think block in the generation prompt (DeepSeek-R1's ends
"<｜Assistant｜><think>\\n"). The model then writes only what follows, so the SFT target leaves that
opening out, and `opened_by_template` gives the text decoding puts back in front of a sampled
completion: the verifier and the format reward always read the whole
`<think> .. </think> <answer> .. </answer>`.
"""

from __future__ import annotations

import functools

from r1jax.data import chat
from r1jax.data.hf_tokenizer import HFTokenizer
from r1jax.data.text_tokenizer import TextTokenizer

_PROBE = {"prompt": "1+1"}  # any problem: the generation prompt's tail does not depend on it


def uses_chat_template(tok: TextTokenizer) -> bool:
    """Whether prompts for `tok` are rendered with its checkpoint's chat template."""
    return isinstance(tok, HFTokenizer) and tok.chat_template is not None


def user_message(example: dict, instruction: str = chat.SHORT_SYSTEM) -> dict:
    if "prompt" not in example:
        raise KeyError(f"example has no 'prompt' field (fields: {sorted(example)})")
    return {"role": "user", "content": f"{example['prompt']}\n{instruction}"}


def prompt_text(tok: TextTokenizer, example: dict, instruction: str = chat.SHORT_SYSTEM) -> str:
    """The text the model is conditioned on; it ends where the completion starts."""
    if uses_chat_template(tok):
        return tok.apply_chat_template([user_message(example, instruction)],
                                       add_generation_prompt=True)
    return chat.format_prompt(example, instruction)


def prompt_ids(tok: TextTokenizer, example: dict, instruction: str = chat.SHORT_SYSTEM,
               max_tokens: int | None = None) -> list[int]:
    """Token ids of the prompt, bos first where it belongs; when `max_tokens` is given only the
    text's first `max_tokens` tokens are made (`TextTokenizer.encode_prefix`)."""
    text = prompt_text(tok, example, instruction)
    bos = [] if uses_chat_template(tok) or tok.bos_id is None else [tok.bos_id]
    ids = tok.encode(text) if max_tokens is None else tok.encode_prefix(text, max_tokens)
    return [*bos, *ids]


@functools.lru_cache(maxsize=16)  # asked once per SFT row and per decoded batch
def opened_by_template(tok: TextTokenizer) -> str:
    """The start of the R1 completion format that the generation prompt already holds ("<think>\\n"
    for DeepSeek-R1's template), "" when the model writes all of it."""
    if not uses_chat_template(tok):
        return ""
    text = prompt_text(tok, _PROBE)
    start = text.rfind(chat.THINK_OPEN)
    if start < 0 or text[start + len(chat.THINK_OPEN):].strip():
        return ""
    return text[start:]


def completion_text(tok: TextTokenizer, example: dict) -> str:
    """The target the model writes after `prompt_text` (eos not included)."""
    completion = chat.completion_of(example)
    if not uses_chat_template(tok):
        return completion
    completion = completion.lstrip()
    if opened_by_template(tok) and completion.startswith(chat.THINK_OPEN):
        completion = completion[len(chat.THINK_OPEN):].lstrip()
    return completion
