"""The R1-Zero chat template, shortened for tiny models (REFERENCE §3.3).

R1-Zero's template is a system paragraph, then "User: prompt. Assistant:", and the completion is
`<think> reasoning </think> <answer> answer </answer>`. A tiny model with a ~128-token budget
cannot afford the 60-word paragraph, so `SHORT_SYSTEM` keeps only the instruction that defines
the structure; `R1_ZERO_SYSTEM` is the paper's text for models that can afford it.

The completion (not the prompt) opens with `<think>`, so the format reward can check all four
tags in the model's own output (REFERENCE §5.1, Logic-RL: each tag exactly once, in order).
"""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>."
)
SHORT_SYSTEM = "Think in <think> </think>, then answer in <answer> </answer>."

# The same format as a chat template, for code that formats conversations through the tokenizer
# interface: [system, user] with add_generation_prompt renders `format_prompt`, and an assistant
# message with the completion (no leading space) renders `format_example`. Messages are joined by
# "\n" ({{ "\n" }}, since trim_blocks would eat a literal newline after a tag).
R1_ZERO_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if message.role == 'user' %}User: "
    "{% elif message.role == 'assistant' %}Assistant: "
    "{% elif message.role != 'system' %}"
    "{{ raise_exception('roles are system, user and assistant, not ' + message.role) }}"
    "{% endif %}"
    "{{ message.content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\nAssistant:' }}{% endif %}"
)


def format_prompt(example: dict, system: str = SHORT_SYSTEM) -> str:
    """The text the model is conditioned on; it ends where the completion starts."""
    if "prompt" not in example:
        raise KeyError(f"example has no 'prompt' field (fields: {sorted(example)})")
    return f"{system}\nUser: {example['prompt']}\nAssistant:"


def format_completion(reasoning: str, answer: str) -> str:
    """What the model should produce, leading space included (it follows "Assistant:")."""
    think = f"{THINK_OPEN} {reasoning} {THINK_CLOSE}" if reasoning else f"{THINK_OPEN} {THINK_CLOSE}"
    return f" {think} {ANSWER_OPEN} {answer} {ANSWER_CLOSE}"


def completion_of(example: dict) -> str:
    """An example's target completion: a ready-made `completion` field wins over the parts."""
    if example.get("completion") is not None:
        return str(example["completion"])
    if "answer" not in example:
        raise KeyError(f"example needs 'completion' or 'answer' (fields: {sorted(example)})")
    return format_completion(str(example.get("reasoning") or ""), str(example["answer"]))


def format_example(example: dict, system: str = SHORT_SYSTEM) -> str:
    """Prompt and completion as one document, for pretraining and for tokenizer training."""
    return format_prompt(example, system) + completion_of(example)
