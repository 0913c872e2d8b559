"""Turn conversations and documents into token ids and next-token targets (pure functions).

Conversations are rendered with the model's own chat template. Message text is tokenized with
special-token parsing off, so `<|im_end|>` typed in a ticket stays text; the template's own
markup is tokenized with it on. Targets cover assistant turns *and* their end-of-turn token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from .records import Conversation, Document

IGNORE = -100
# Private-use code points stand in for message text while the template renders, so that we know
# exactly which characters came from the user and which from the template.
_SLOT = "\ue000{}\ue001"
_SLOT_RE = re.compile("\ue000(\\d+)\ue001")
# End-of-turn tokens of the common chat formats, used when the template's turn suffix has no EOS.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


@dataclass(frozen=True)
class Example:
    """One training row in token space."""

    input_ids: list[int]
    targets: list[int]
    """targets[t] is the token the model must predict after input_ids[:t+1], or -100 (not trained)."""
    source: str
    """file:line of the row this came from."""

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.targets if t != IGNORE)


class TemplateError(ValueError):
    """The chat template cannot render this data (missing template, rejected roles, dropped text)."""


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that close an assistant turn: EOS plus the known end-of-turn markers in the vocab."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
    return ids


def encode_conversation(conversation: Conversation, tokenizer: Any, max_seq_tokens: int) -> tuple[Example, bool]:
    """Render, tokenize and label one conversation; returns (example, was_truncated)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the model has no chat template: set `chat_template` in the config to a name ('chatml') "
            "or a Jinja string"
        )
    slots = [{"role": m.role, "content": _SLOT.format(i)} for i, m in enumerate(conversation.messages)]
    try:
        rendered = tokenizer.apply_chat_template(slots, tokenize=False)
    except Exception as exc:  # Jinja raises its own types (raise_exception in templates)
        raise TemplateError(f"{conversation.source}: the chat template rejected this conversation: {exc}") from None
    pieces = _SLOT_RE.split(rendered)  # [template, idx, template, idx, ..., template]
    order = [int(i) for i in pieces[1::2]]
    if order != list(range(len(conversation.messages))):
        raise TemplateError(
            f"{conversation.source}: the chat template dropped, reordered or repeated message text "
            f"(rendered order {order}); set `chat_template` to one that keeps every message"
        )
    eot = end_of_turn_ids(tokenizer)
    input_ids: list[int] = []
    trained: list[bool] = []

    def add(ids: Sequence[int], train: bool) -> None:
        input_ids.extend(ids)
        trained.extend([train] * len(ids))

    add(_encode(tokenizer, pieces[0], special=True), False)
    for k, message in enumerate(conversation.messages):
        is_target = message.role == "assistant" and message.trained
        add(_encode(tokenizer, message.content, special=False), is_target)
        suffix = _encode(tokenizer, pieces[2 + 2 * k], special=True)
        if not is_target:
            add(suffix, False)
            continue
        # Train the turn's closing markup up to and including its end-of-turn token: a model that
        # never learns to stop is the most common fine-tuning failure.
        cut = next((j + 1 for j, t in enumerate(suffix) if t in eot), None)
        if cut is None:
            last = k == len(conversation.messages) - 1
            if last and tokenizer.eos_token_id is not None:
                add(suffix, True)
                add([tokenizer.eos_token_id], True)
            else:
                add(suffix, False)
        else:
            add(suffix[:cut], True)
            add(suffix[cut:], False)
    truncated = len(input_ids) > max_seq_tokens
    input_ids, trained = input_ids[:max_seq_tokens], trained[:max_seq_tokens]
    return Example(input_ids, _shift(input_ids, trained), conversation.source), truncated


def encode_document(document: Document, tokenizer: Any, max_seq_tokens: int) -> list[Example]:
    """Raw text: every token trained, EOS appended, cut into chunks of the context length."""
    ids = _encode(tokenizer, document.text, special=False)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    chunks = [ids[i : i + max_seq_tokens] for i in range(0, len(ids), max_seq_tokens)]
    return [Example(c, _shift(c, [True] * len(c)), document.source) for c in chunks if len(c) >= 2]


def encode_prompt(messages: list[dict[str, str]], tokenizer: Any) -> list[int]:
    """Token ids of a prompt ending in the assistant header, built exactly as in training."""
    slots = [{"role": m["role"], "content": _SLOT.format(i)} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(slots, tokenize=False, add_generation_prompt=True)
    pieces = _SLOT_RE.split(rendered)
    ids = _encode(tokenizer, pieces[0], special=True)
    for k, message in enumerate(messages):
        ids += _encode(tokenizer, message["content"], special=False)
        ids += _encode(tokenizer, pieces[2 + 2 * k], special=True)
    return ids


def _encode(tokenizer: Any, text: str, special: bool) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])


def _shift(input_ids: list[int], trained: list[bool]) -> list[int]:
    """Targets aligned with inputs: position t predicts token t+1 when that token is trained."""
    targets = [input_ids[t + 1] if trained[t + 1] else IGNORE for t in range(len(input_ids) - 1)]
    return targets + [IGNORE]
