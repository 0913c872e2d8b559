"""The Ollama Modelfile of a GGUF export: the chat template as a Go template, stop tokens and the
template's default system prompt."""

from __future__ import annotations

import re
from typing import Any

from ..data.render import end_of_turn_ids

# Go templates for the chat formats whose markup we can read off the Jinja template. Ollama adds
# the SYSTEM line as the first of .Messages, so the templates only walk .Messages.
_OLLAMA_TEMPLATES = {
    "chatml": (
        '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
        '<|im_start|>assistant\n'
    ),
    "llama3": (
        '<|begin_of_text|>'
        '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}'
        '<|start_header_id|>assistant<|end_header_id|>\n\n'
    ),
}


def chat_format(template: str | None) -> str | None:
    if not template:
        return None
    if "<|im_start|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template:
        return "llama3"
    return None


def default_system_prompt(tokenizer: Any) -> str | None:
    """The system prompt the chat template adds when a conversation has none (SmolLM2 has one)."""
    marker = "\ue000"
    try:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    except Exception:  # a template that rejects this probe simply has no default to find
        return None
    head = rendered.split(marker)[0]
    fmt = chat_format(tokenizer.chat_template)
    pattern = {"chatml": r"<\|im_start\|>system\n(.*?)<\|im_end\|>",
               "llama3": r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>"}.get(fmt or "")
    found = re.search(pattern, head, re.S) if pattern else None
    return found.group(1) if found else None


def modelfile(tokenizer: Any, gguf_name: str) -> str:
    """An Ollama Modelfile: the GGUF, the chat template as a Go template, stop tokens, default system."""
    vocab = tokenizer.get_vocab()
    id_to_token = {i: t for t, i in vocab.items()}
    stops = sorted({id_to_token[i] for i in end_of_turn_ids(tokenizer) if i in id_to_token})
    lines = [f"FROM ./{gguf_name}"]
    fmt = chat_format(tokenizer.chat_template)
    if fmt:
        lines.append(f'TEMPLATE """{_OLLAMA_TEMPLATES[fmt]}"""')
        system = default_system_prompt(tokenizer)
        if system:
            lines.append(f'SYSTEM """{system}"""')
    else:
        lines.append("# No TEMPLATE: the chat template is not ChatML or Llama 3; Ollama reads "
                     "tokenizer.chat_template from the GGUF metadata where it knows it.")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"
