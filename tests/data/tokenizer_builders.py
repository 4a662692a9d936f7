"""Small Hugging Face tokenizer directories built locally, in the shape two published models ship,
and the varied strings the parity tests run through them.

Each builder trains a byte-level BPE (vocab ~700) on a small corpus with the `tokenizers` library,
using the pipeline of the model it imitates, saves it with
`transformers.PreTrainedTokenizerFast(...).save_pretrained(directory)`, then edits
`tokenizer_config.json` into the layout that model publishes:
- Qwen2.5-Instruct: NFC + Qwen's pre-tokenizer regex; no bos; eos `<|im_end|>`; the ChatML
  template as the `chat_template` field of tokenizer_config.json; `tokenizer_class`
  "Qwen2Tokenizer" (so transformers rebuilds its own Qwen2 pipeline from the vocabulary: reading
  tokenizer.json as written must agree with it).
- DeepSeek-R1: digit / CJK / punctuation splits; bos added by the post-processor
  (`add_bos_token`), special tokens as AddedToken dicts, the template in chat_template.jinja
  (opens `<think>\\n` in the generation prompt), a config.json of model_type deepseek_v3.
"""

import json
import pathlib
import random

import tokenizers
from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors, trainers

TEMPLATES = pathlib.Path(__file__).parent / "chat_templates"
QWEN_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
DEEPSEEK_SPLITS = (r"\p{N}{1,3}", "[一-龥\u3040-ゟ゠-ヿ]+",
                   r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
                   r"""| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
R1_BOS, R1_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
R1_SPECIAL = [R1_BOS, R1_EOS, "<｜User｜>", "<｜Assistant｜>"]
R1_PLAIN_ADDED = ["<think>", "</think>"]  # regular added tokens in R1: never skipped by decode

_PIECES = {
    "ascii": ["The answer is", "Let's compute", "hello world", "Wait, that's wrong.", "So x = 3.",
              "don't", "we'll", "I'm", "they've", "It's", "ok ."],
    "unicode": ["café", "naïve", "Straße", "Привет мир", "Γειά σου", "مرحبا", "नमस्ते", "e\u0301",
                "Å", "ﬁ", "½", "Ⅻ", "ǅ", "\u00a0nbsp", "\u200bzero width", "İstanbul"],
    "cjk": ["中文字符", "数学题：求解方程", "日本語のテキスト", "カタカナ", "한국어 문장", "（全角）", "\u3000全角空格"],
    "emoji": ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "🤖 robot", "✅ done"],
    "digits": ["12345678901234567890", "3.14159", "-42", "1,000,000", "0x1F", "1e-10", "2^{10}=1024"],
    "latex": [r"\frac{a}{b}", r"\sqrt{x^2+1}", r"$\int_0^1 x\,dx = \frac12$", r"\boxed{42}",
              r"\begin{align} a &= b \\ c &= d \end{align}", r"\alpha + \beta \leq \gamma"],
    "code": ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {}", "x = {'a': [1, 2]}",
             "SELECT * FROM t WHERE id=1;", "<div class=\"a\">&amp;</div>", "a && b || !c", "#include <stdio.h>"],
    "space": ["  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "    \n\n   ", "\n\n\n\n", " ", "\x0b"],
    "tags": ["<think>", "</think>", "<answer>", "</answer>", "<think>\n", "<|im_start|>", "<|im_end|>",
             "<｜User｜>", R1_EOS, "<|endoftext|>", "<think >", "< think>"],
}


def varied_strings(count: int = 1200, seed: int = 0) -> list[str]:
    """`count` strings mixing every category (each one alone first, then random mixes)."""
    rng = random.Random(seed)
    flat = [piece for pieces in _PIECES.values() for piece in pieces]
    strings = ["", *flat]
    while len(strings) < count:
        parts = rng.choices(flat, k=rng.randint(1, 8))
        joiners = rng.choices(["", " ", "  ", "\n", "\t", " \n"], k=len(parts))
        strings.append("".join(j + p for j, p in zip(joiners, parts)))
    return strings[:count]


def _corpus(seed: int = 1) -> list[str]:
    return varied_strings(400, seed) + ["The answer is 42. Let's verify: 6*7=42."] * 20


def _train(pre_tokenizer, normalizer, special: list[str], vocab_size: int = 700) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def _save(tok: tokenizers.Tokenizer, directory: pathlib.Path, **special) -> dict:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(str(directory))
    return json.loads((directory / "tokenizer_config.json").read_text())


def _write_config(directory: pathlib.Path, config: dict) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))


def build_qwen_style(directory: pathlib.Path) -> pathlib.Path:
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_REGEX), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = _train(pre, normalizers.NFC(), QWEN_SPECIAL)
    config = _save(tok, directory, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    config.update({"add_bos_token": False, "add_prefix_space": False, "bos_token": None,
                   "unk_token": None, "clean_up_tokenization_spaces": False, "errors": "replace",
                   "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
                   "chat_template": (TEMPLATES / "qwen2_5.jinja").read_text()})
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    _write_config(directory, config)
    return directory


def build_r1_style(directory: pathlib.Path) -> pathlib.Path:
    splits = [pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in DEEPSEEK_SPLITS]
    pre = pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = _train(pre, None, R1_SPECIAL)
    tok.add_tokens([tokenizers.AddedToken(t, normalized=False, special=False) for t in R1_PLAIN_ADDED])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{R1_BOS}:0 $A:0", pair=f"{R1_BOS}:0 $A:0 {R1_BOS}:1 $B:1",
        special_tokens=[(R1_BOS, tok.token_to_id(R1_BOS))])
    config = _save(tok, directory, bos_token=R1_BOS, eos_token=R1_EOS, pad_token=R1_EOS,
                   chat_template=(TEMPLATES / "deepseek_r1.jinja").read_text())

    def added_token(content):
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}
    config.update({"add_bos_token": True, "add_eos_token": False, "bos_token": added_token(R1_BOS),
                   "eos_token": added_token(R1_EOS), "pad_token": added_token(R1_EOS),
                   "unk_token": None, "clean_up_tokenization_spaces": False, "legacy": True,
                   "tokenizer_class": "LlamaTokenizerFast", "use_default_system_prompt": False})
    _write_config(directory, config)
    (directory / "config.json").write_text(json.dumps({"model_type": "deepseek_v3"}))
    return directory


def conversations(strings: list[str], seed: int = 0) -> list[dict]:
    """Chats built from `strings`: a user turn alone, with a system message, multi-turn with
    assistant replies that carry `<think>` reasoning."""
    rng = random.Random(seed)
    chats = []
    for i, text in enumerate(strings):
        other = strings[rng.randrange(len(strings))]
        kind = i % 4
        messages = [{"role": "user", "content": text}]
        if kind >= 1:
            messages.insert(0, {"role": "system", "content": other})
        if kind >= 2:
            messages += [{"role": "assistant", "content": f"<think>\n{other}\n</think>\n\n{text}"},
                         {"role": "user", "content": other}]
        if kind == 3:
            messages.append({"role": "assistant", "content": text})
        chats.append({"messages": messages, "add_generation_prompt": bool(rng.getrandbits(1))})
    return chats


STYLES = {"qwen": build_qwen_style, "r1": build_r1_style}


def ours_and_reference(style: str, directory: pathlib.Path):
    """(style, HFTokenizer, transformers.AutoTokenizer) of a `style` directory built in `directory`."""
    from transformers import AutoTokenizer

    from r1jax.data import HFTokenizer

    built = STYLES[style](directory)
    return style, HFTokenizer(str(built)), AutoTokenizer.from_pretrained(str(built))
