"""Chat templates: the Jinja programs Hugging Face checkpoints ship, rendered as transformers does.

A checkpoint's template (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`)
turns a list of `{"role", "content"}` messages into the exact text the model was trained on. The
text must match transformers' `apply_chat_template` character for character (a stray newline is
a token the model never saw), so the environment copies its settings
(`transformers/utils/chat_template_utils.py`):
- `ImmutableSandboxedEnvironment`: a template is code from a downloaded file; the sandbox denies
  attribute access to Python internals and mutation of the messages.
- `trim_blocks` + `lstrip_blocks`: published templates are written for them (a `{% if %}` line
  leaves no newline or indentation behind).
- `loopcontrols` (`{% break %}`, `{% continue %}`), used by tool-calling templates.
- `raise_exception(message)`: templates call it to refuse a conversation (wrong role order).
- `strftime_now(format)`: the current date, which some system prompts state.
- `tojson` redefined as plain `json.dumps` with `ensure_ascii=False`: Jinja's own filter escapes
  `<`, `>`, `&` and `'` for HTML, which would change the text of tool schemas.
The named special tokens (`bos_token`, `eos_token`, ...) are template variables, as transformers
passes its `special_tokens_map`; keyword arguments override them.
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """A template that does not compile or does not render; the message names where it came from."""


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.datetime.now().strftime(format)


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for transformers' assistant
    masks; rendering keeps its body unchanged (templates that use it must still compile)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols, _GenerationBlock])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=16)
def _compile(source: str, origin: str) -> jinja2.Template:
    env = _environment()
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template from {origin} does not compile: line {e.lineno}: "
                                f"{e.message}") from e


class ChatTemplate:
    """A compiled chat template and the special tokens it sees as variables.

    `origin` (the file it was read from) is named in every error.
    """

    def __init__(self, source: str, *, origin: str, special_tokens: Mapping[str, str] | None = None):
        if not isinstance(source, str) or not source.strip():
            raise ChatTemplateError(f"chat template from {origin} is empty")
        self.source, self.origin = source, origin
        self.special_tokens = dict(special_tokens or {})
        self._template = _compile(source, origin)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False,
               tools: Sequence[Mapping[str, Any]] | None = None, documents: Sequence[Mapping] | None = None,
               **template_kwargs) -> str:
        """The conversation as text. `add_generation_prompt` appends what opens the assistant's
        turn (for R1-style templates, `<think>\\n` included), so sampling continues from there."""
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise ChatTemplateError(f"messages[{i}]={message!r} must be a dict with a 'role' "
                                        f"(rendering the chat template from {self.origin})")
        variables = {**self.special_tokens, **template_kwargs}
        try:
            return self._template.render(messages=list(messages), tools=tools, documents=documents,
                                         add_generation_prompt=add_generation_prompt, **variables)
        except Exception as e:  # raise_exception, the sandbox, or Python errors inside the template
            kind = "" if isinstance(e, jinja2.exceptions.TemplateError) else f"{type(e).__name__}: "
            raise ChatTemplateError(f"chat template from {self.origin} failed to render "
                                    f"{len(messages)} messages: {kind}{e}") from e


def select_template(templates: str | Sequence[Mapping[str, str]] | Mapping[str, str], origin: str) -> str:
    """One template from a config's `chat_template`: a string, or named templates (a list of
    `{"name", "template"}` or a dict), of which transformers uses "default"."""
    if isinstance(templates, str):
        return templates
    if isinstance(templates, Sequence):
        try:
            templates = {t["name"]: t["template"] for t in templates}
        except (KeyError, TypeError) as e:
            raise ChatTemplateError(f"{origin}: chat_template list entries need 'name' and "
                                    f"'template' keys") from e
    if isinstance(templates, Mapping):
        if "default" not in templates:
            raise ChatTemplateError(f"{origin}: chat_template has named templates "
                                    f"{sorted(templates)} but none named 'default'")
        return templates["default"]
    raise ChatTemplateError(f"{origin}: chat_template must be a string or named templates, "
                            f"got {type(templates).__name__}")
