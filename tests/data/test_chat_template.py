"""ChatTemplate against transformers' own renderer (`render_jinja_template`) on a template that
uses every feature transformers' environment defines: trim_blocks / lstrip_blocks, loop controls,
`tojson` without HTML escaping, `strftime_now`, `raise_exception`, special-token variables,
`{% generation %}` blocks; and the errors a broken template gives."""

import datetime

import jinja2
import pytest

from r1jax.data import chat
from r1jax.data.chat_template import ChatTemplate, ChatTemplateError, select_template

# Indented block tags on their own lines: the text depends on trim_blocks and lstrip_blocks.
FEATURES = """{% for message in messages %}
    {% if message.role == 'system' %}
System: {{ message.content }}
    {% else %}
{% generation %}{{ message.role | upper }}: {{ message.content }}{% endgeneration %}

    {% endif %}
    {% if loop.index >= 4 %}{% break %}{% endif %}
{% endfor %}
{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}
{{ messages[-1] | tojson }}
{% if messages | length > 6 %}{{ raise_exception('at most 6 messages, got ' ~ messages | length) }}{% endif %}
{% if add_generation_prompt %}{{ bos_token }}ASSISTANT ({{ strftime_now('%Y') }}):{% endif %}"""
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
MESSAGES = [{"role": "system", "content": "Use <b>bold</b> & 'quotes'"},
            {"role": "user", "content": "Compute 1+1 — 中文 😀"},
            {"role": "assistant", "content": "  2\n\n"},
            {"role": "user", "content": "and\t3+3?"},
            {"role": "assistant", "content": "6"}]
TOOLS = [{"name": "calc", "description": "x < y & z", "parameters": {"type": "object"}}]


def _transformers(messages, **kwargs):
    from transformers.utils.chat_template_utils import render_jinja_template

    (text,), _ = render_jinja_template(conversations=[messages], chat_template=FEATURES, **SPECIAL, **kwargs)
    return text


@pytest.mark.parametrize("count", [1, 2, 4, 5])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("tools", [None, TOOLS])
def test_renders_like_transformers(count, add_generation_prompt, tools):
    template = ChatTemplate(FEATURES, origin="FEATURES", special_tokens=SPECIAL)
    ours = template.render(MESSAGES[:count], add_generation_prompt=add_generation_prompt, tools=tools)
    assert ours == _transformers(MESSAGES[:count], add_generation_prompt=add_generation_prompt, tools=tools)
    assert ("ASSISTANT (" in ours) == add_generation_prompt
    if add_generation_prompt:
        assert f"<s>ASSISTANT ({datetime.datetime.now().year})" in ours


def test_guard_a_default_jinja_environment_renders_differently():
    # trim_blocks, lstrip_blocks and tojson all change this text, so the test above can fail.
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)
    plain = env.from_string(FEATURES.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    text = plain.render(messages=MESSAGES[:2], **SPECIAL)
    assert text != _transformers(MESSAGES[:2])
    assert "\\u4e2d" in text and "\n    \n" in text  # Jinja's tojson escapes non-ASCII; blocks keep indents


def test_keyword_arguments_override_special_tokens():
    template = ChatTemplate(FEATURES, origin="FEATURES", special_tokens=SPECIAL)
    text = template.render(MESSAGES[:1], add_generation_prompt=True, bos_token="[BOS]")
    assert "[BOS]ASSISTANT" in text and "<s>" not in text


def test_raise_exception_names_the_template():
    template = ChatTemplate(FEATURES, origin="ckpt/chat_template.jinja", special_tokens=SPECIAL)
    with pytest.raises(ChatTemplateError, match=r"ckpt/chat_template\.jinja failed to render 7 messages: "
                                                r"at most 6 messages, got 7"):
        template.render(MESSAGES + MESSAGES[:2])


def test_python_errors_inside_a_template_name_it():
    template = ChatTemplate("{{ messages[0].content + 1 }}", origin="ckpt/chat_template.jinja")
    with pytest.raises(ChatTemplateError, match=r"ckpt/chat_template\.jinja failed to render 1 messages: TypeError"):
        template.render(MESSAGES[:1])


def test_sandbox_refuses_python_internals():
    template = ChatTemplate("{{ messages.__class__.__mro__ }}", origin="evil.jinja")
    with pytest.raises(ChatTemplateError, match="evil.jinja failed to render"):
        template.render(MESSAGES[:1])


@pytest.mark.parametrize("source, match", [
    ("{% for m in messages %}{{ m.content }}", r"bad\.jinja does not compile: line 1"),
    ("   \n", r"bad\.jinja is empty"),
])
def test_broken_templates_name_their_file(source, match):
    with pytest.raises(ChatTemplateError, match=match):
        ChatTemplate(source, origin="bad.jinja")


def test_messages_need_a_role():
    with pytest.raises(ChatTemplateError, match=r"messages\[1\].*must be a dict with a 'role'"):
        ChatTemplate(FEATURES, origin="FEATURES").render([MESSAGES[0], {"content": "hi"}])


def test_named_templates_use_default():
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    assert select_template(named, "cfg") == "D" and select_template({"default": "D"}, "cfg") == "D"
    with pytest.raises(ChatTemplateError, match=r"cfg: chat_template has named templates \['tool_use'\] "
                                                "but none named 'default'"):
        select_template(named[:1], "cfg")


def test_embedded_template_is_the_r1_zero_format():
    template = ChatTemplate(chat.R1_ZERO_CHAT_TEMPLATE, origin="R1_ZERO_CHAT_TEMPLATE")
    example = {"prompt": "Compute 12+9.", "answer": "21", "reasoning": "12+9=21"}
    messages = [{"role": "system", "content": chat.SHORT_SYSTEM}, {"role": "user", "content": example["prompt"]}]
    assert template.render(messages, add_generation_prompt=True) == chat.format_prompt(example)
    completion = chat.completion_of(example)
    assert template.render([*messages, {"role": "assistant", "content": completion.lstrip(" ")}]) == \
        chat.format_example(example)
    with pytest.raises(ChatTemplateError, match="roles are system, user and assistant, not tool"):
        template.render([{"role": "tool", "content": "x"}])
