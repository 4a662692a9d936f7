"""A Hugging Face checkpoint's tokenizer: `tokenizer.json` through the `tokenizers` library, with
the special tokens and the chat template of the checkpoint directory.

Reads what transformers' `AutoTokenizer.from_pretrained(directory)` reads and gives the same ids
and text (tests/data/test_hf_tokenizer.py compares the two on a thousand strings):
- `tokenizer.json`: the whole pipeline (normalizer, pre-tokenizer, model, post-processor,
  decoder, added tokens). Truncation and padding stored in it are switched off, as transformers'
  `encode` does when not asked to truncate or pad.
- `tokenizer_config.json`: the named special tokens (`bos_token`, `eos_token`, ... as strings or
  AddedToken dicts), `clean_up_tokenization_spaces`, `split_special_tokens`, and
  `chat_template`. Its `add_bos_token`/`add_eos_token` are ignored, as transformers ignores them
  when a tokenizer.json exists: tokenizer.json's post-processor alone decides what
  `encode(text, add_special_tokens=True)` adds (DeepSeek's adds bos, Qwen's nothing).
- `special_tokens_map.json`: older checkpoints keep the special tokens there; as in transformers
  it is read only when tokenizer_config.json has no `added_tokens_decoder`, and it wins.
- `chat_template.jinja`: the template, preferred to tokenizer_config.json's `chat_template`.
Special tokens named in the configs but absent from tokenizer.json are added (as transformers
adds them), so their ids follow the vocabulary's.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

import tokenizers

from r1jax.data.chat_template import ChatTemplate, select_template
from r1jax.data.text_tokenizer import TextTokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# transformers' SPECIAL_TOKENS_ATTRIBUTES: the names a chat template sees as variables.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                       "mask_token")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: line {e.lineno} column {e.colno}: {e.msg}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def _token_text(value: Any, path: str, field: str) -> str | None:
    """A special token as the configs spell it: a string, an AddedToken dict or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{path}: {field}={value!r} must be a string, null, or a dict with 'content'")


def read_tokenizer_config(directory: str) -> tuple[dict, dict[str, str | None]]:
    """(tokenizer_config.json, {special token name: its text}) of a checkpoint directory."""
    config_path = os.path.join(directory, CONFIG_FILE)
    config = _read_json(config_path) if os.path.exists(config_path) else {}
    special = {name: _token_text(config.get(name), config_path, name) for name in SPECIAL_TOKEN_NAMES}
    map_path = os.path.join(directory, SPECIAL_TOKENS_MAP_FILE)
    if "added_tokens_decoder" not in config and os.path.exists(map_path):
        legacy = _read_json(map_path)
        special.update({name: _token_text(legacy[name], map_path, name)
                        for name in SPECIAL_TOKEN_NAMES if name in legacy})
    return config, special


def read_chat_template(directory: str, config: Mapping[str, Any],
                       special_tokens: Mapping[str, str | None]) -> ChatTemplate | None:
    template_path = os.path.join(directory, CHAT_TEMPLATE_FILE)
    if os.path.exists(template_path):
        with open(template_path, encoding="utf-8") as f:
            source, origin = f.read(), template_path
    elif config.get("chat_template") is not None:
        origin = f"{os.path.join(directory, CONFIG_FILE)} field chat_template"
        source = select_template(config["chat_template"], origin)
    else:
        return None
    variables = {name: text for name, text in special_tokens.items() if text is not None}
    return ChatTemplate(source, origin=origin, special_tokens=variables)


class HFTokenizer(TextTokenizer):
    """`tokenizer.json` + special tokens + chat template of the checkpoint in `directory`."""

    def __init__(self, directory: str):
        self.directory = directory
        tokenizer_path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.isfile(tokenizer_path):
            raise FileNotFoundError(
                f"{tokenizer_path} does not exist: r1jax reads a checkpoint's tokenizer from "
                f"{TOKENIZER_FILE} (a directory with only tokenizer.model or vocab.json + merges.txt "
                "can be converted with transformers: AutoTokenizer.from_pretrained(d).save_pretrained(d))")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(tokenizer_path)
        except Exception as e:  # the Rust side raises a bare Exception with the serde message
            raise ValueError(f"{tokenizer_path} is not a tokenizers file: {e}") from e
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.config, self.special_tokens = read_tokenizer_config(directory)
        self._add_missing_tokens()
        self._tokenizer.encode_special_tokens = bool(self.config.get("split_special_tokens", False))
        # Kept, not recomputed: decoding checks every sampled id against it.
        self._vocab_size = max(self._tokenizer.get_vocab(with_added_tokens=True).values()) + 1

        self.eos_id = self._special_id("eos_token", required=True)
        self.bos_id = self._special_id("bos_token")
        self.unk_id = self._special_id("unk_token")
        pad_id = self._special_id("pad_token")
        # Many checkpoints name no pad token; batches mark padding with masks, so the id only fills.
        self.pad_id = self.eos_id if pad_id is None else pad_id
        self.chat_template = read_chat_template(directory, self.config, self.special_tokens)
        # transformers skips the WordPiece-era space cleanup for BPE models (it deletes real spaces).
        self._clean_up_spaces = bool(self.config.get("clean_up_tokenization_spaces", False)) and (
            type(self._tokenizer.model).__name__ != "BPE"
            or self.config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False))

    def _add_missing_tokens(self) -> None:
        """Tokens of the configs that tokenizer.json lacks, added as transformers adds them."""
        present = set(self._tokenizer.get_vocab(with_added_tokens=True))
        missing = []
        for _, entry in sorted(self.config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0])):
            if entry.get("content") not in present:
                fields = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
                missing.append(tokenizers.AddedToken(**{k: entry[k] for k in fields if k in entry}))
        present |= {token.content for token in missing}
        named = dict.fromkeys(text for text in self.special_tokens.values() if text is not None)
        missing += [tokenizers.AddedToken(text, special=True) for text in named if text not in present]
        for token in missing:
            if token.special:
                self._tokenizer.add_special_tokens([token])
            else:
                self._tokenizer.add_tokens([token])

    def _special_id(self, name: str, required: bool = False) -> int | None:
        text = self.special_tokens[name]
        if text is None:
            if required:
                raise ValueError(
                    f"{os.path.join(self.directory, CONFIG_FILE)} names no {name}: r1jax stops sampling "
                    f"at it; set \"{name}\" there (or in {SPECIAL_TOKENS_MAP_FILE})")
            return None
        return self._tokenizer.token_to_id(text)

    @property
    def path(self) -> str:
        return self.directory

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`; `add_special_tokens=True` adds what the post-processor adds (the bos of
        Llama-style checkpoints), as `transformers`' default `encode` does."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self._clean_up_spaces:
            for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                                   (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                                   (" 're", "'re")):
                text = text.replace(spaced, joined)
        return text

    def id_to_piece(self, token_id: int) -> str:
        piece = self._tokenizer.id_to_token(int(token_id))
        if piece is None:
            raise ValueError(f"token id {token_id} is not in {self.directory}/{TOKENIZER_FILE} "
                             f"(vocab_size={self.vocab_size})")
        return piece

    def piece_to_id(self, piece: str) -> int | None:
        return self._tokenizer.token_to_id(piece)

    def _piece_lengths(self) -> Iterable[int]:
        # A byte-level piece spells one character per byte, a byte-fallback piece six ("<0xE4>"):
        # never fewer characters than the text it decodes to.
        return (len(piece) for piece in self._tokenizer.get_vocab(with_added_tokens=True))

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = False, **template_kwargs) -> str:
        if self.chat_template is None:
            raise ValueError(f"{self.directory} has no chat template: neither {CHAT_TEMPLATE_FILE} "
                             f"nor a chat_template field in {CONFIG_FILE}")
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt,
                                         **template_kwargs)
