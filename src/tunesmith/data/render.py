"""Turn conversations and documents into token ids and next-token targets (pure functions).

Conversations are rendered with the model's own chat template. Message text is tokenized with
special-token parsing off, so `<|im_end|>` typed in a ticket stays text; the template's own
markup is tokenized with it on. Targets cover assistant turns *and* their end-of-turn token.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, TemplateError
from .documents import PART_SEPARATOR
from .records import Conversation, Document, PreferencePair

IGNORE = -100
# Private-use code points stand in for message text while the template renders, so that we know
# exactly which characters came from the user and which from the template.
_SLOT = "\ue000{}\ue001"
_SLOT_RE = re.compile("\ue000(\\d+)\ue001")
# End-of-turn tokens of the common chat formats, used when the template's turn suffix has no EOS.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


@dataclass(frozen=True)
class Example:
    """One training row in token space."""

    input_ids: Sequence[int]  # a list, or an int32 view into the memory-mapped token cache
    targets: Sequence[int]
    """targets[t] is the token the model must predict after input_ids[:t+1], or -100 (not trained)."""
    source: str
    """file:line of the row this came from (of a document chunk: the line the chunk starts on)."""
    document: str = ""
    """The .txt/.md file a chunk of a whole-file document comes from; empty for rows. A split over
    several documents holds each one out whole, by this name."""

    @property
    def n_trained(self) -> int:
        return int(np.count_nonzero(np.asarray(self.targets) != IGNORE))



def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that close an assistant turn: EOS plus the known end-of-turn markers in the vocab."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    # A token is in the vocabulary when its id maps back to it (unknown tokens map to unk's id);
    # cheaper than get_vocab(), which copies the whole vocabulary.
    for token in END_OF_TURN_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and tokenizer.convert_ids_to_tokens(token_id) == token:
            ids.add(token_id)
    return ids


def pad_id(tokenizer: Any) -> int:
    """The id that left-pads batched prompts: the tokenizer's pad token, else its first end-of-turn
    id. Padded positions are masked out of attention, so any id will do; it must only exist."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(end_of_turn_ids(tokenizer))


def with_system_prompt(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """`messages` with `system_prompt` as their first turn when they have no system turn: what a
    run with a `system_prompt` was trained on (records.py adds it the same way to every row)."""
    if not system_prompt or any(m["role"] == "system" for m in messages):
        return list(messages)
    return [{"role": "system", "content": system_prompt}, *messages]


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Plain text as token ids, with special-token parsing off: a `<|im_end|>` typed in the text
    stays text, as in every message of a conversation."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def encode_conversation(conversation: Conversation, tokenizer: Any, max_seq_tokens: int) -> tuple[Example, bool]:
    """Render, tokenize and label one conversation; returns (example, was_truncated)."""
    return encode_conversations([conversation], tokenizer, max_seq_tokens)[0]


def encode_conversations(conversations: Sequence[Conversation], tokenizer: Any,
                         max_seq_tokens: int) -> list[tuple[Example, bool]]:
    """`encode_conversation` for many rows at once: the template is rendered once per role sequence
    and all message texts go through the tokenizer in one batched call."""
    # Message text is rendered as slots, so the markup depends on the roles alone: one render per
    # role sequence gives every row's markup (and a template error names the first row it hits).
    layouts: dict[tuple[str, ...], list[list[int]]] = {}
    for conversation in conversations:
        roles = tuple(m.role for m in conversation.messages)
        if roles not in layouts:
            layouts[roles] = template_layout(roles, tokenizer, conversation.source)
    texts = [m.content for c in conversations for m in c.messages]
    encoded = iter(_encode_batch(tokenizer, texts))
    eot = end_of_turn_ids(tokenizer)
    out = []
    for conversation in conversations:
        pieces = layouts[tuple(m.role for m in conversation.messages)]
        contents = [next(encoded) for _ in conversation.messages]
        out.append(_label(conversation, pieces, contents, eot, tokenizer.eos_token_id, max_seq_tokens))
    return out


def template_layout(roles: Sequence[str], tokenizer: Any, source: str = "") -> list[list[int]]:
    """Token ids of the template markup around messages with these roles: [before the first
    message, after message 0, after message 1, ...]; TemplateError when the template refuses them."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the model has no chat template: set `chat_template` in the config to a name ('chatml') "
            "or a Jinja string"
        )
    where = f"{source}: " if source else ""
    slots = [{"role": role, "content": _SLOT.format(i)} for i, role in enumerate(roles)]
    try:
        rendered = tokenizer.apply_chat_template(slots, tokenize=False)
    except Exception as exc:  # Jinja raises its own types (raise_exception in templates)
        raise TemplateError(f"{where}the chat template rejected this conversation: {exc}") from None
    pieces = _SLOT_RE.split(rendered)  # [template, idx, template, idx, ..., template]
    order = [int(i) for i in pieces[1::2]]
    if order != list(range(len(roles))):
        raise TemplateError(
            f"{where}the chat template dropped, reordered or repeated message text "
            f"(rendered order {order}); set `chat_template` to one that keeps every message"
        )
    return [_encode(tokenizer, piece, special=True) for piece in pieces[0::2]]


def _label(conversation: Conversation, pieces: list[list[int]], contents: list[list[int]], eot: set[int],
           eos_token_id: int | None, max_seq_tokens: int) -> tuple[Example, bool]:
    input_ids: list[int] = []
    trained: list[bool] = []

    def add(ids: Sequence[int], train: bool) -> None:
        input_ids.extend(ids)
        trained.extend([train] * len(ids))

    add(pieces[0], False)
    for k, message in enumerate(conversation.messages):
        is_target = message.role == "assistant" and message.trained
        add(contents[k], is_target)
        suffix = pieces[k + 1]
        if not is_target:
            add(suffix, False)
            continue
        # Train the turn's closing markup up to and including its end-of-turn token: a model that
        # never learns to stop is the most common fine-tuning failure.
        cut = next((j + 1 for j, t in enumerate(suffix) if t in eot), None)
        if cut is None:
            last = k == len(conversation.messages) - 1
            if last and eos_token_id is not None:
                add(suffix, True)
                add([eos_token_id], True)
            else:
                add(suffix, False)
        else:
            add(suffix[:cut], True)
            add(suffix[cut:], False)
    truncated = len(input_ids) > max_seq_tokens
    input_ids, trained = input_ids[:max_seq_tokens], trained[:max_seq_tokens]
    return Example(input_ids, _shift(input_ids, trained), conversation.source), truncated


def encode_document(document: Document, tokenizer: Any, max_seq_tokens: int) -> list[Example]:
    """Raw text: every token trained, EOS appended, cut into chunks of the context length. Chunks of
    a whole .txt/.md file name the line they start on and the file they belong to; chunks of a PDF,
    DOCX or HTML file the page or section they start on (`manual.pdf:p12`)."""
    if document.extracted is not None:
        return _encode_extracted(document, tokenizer, max_seq_tokens)
    ids = _encode(tokenizer, document.text, special=False)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    chunks = [ids[i : i + max_seq_tokens] for i in range(0, len(ids), max_seq_tokens)]
    if not document.whole_file:
        return [Example(c, _shift(c, [True] * len(c)), document.source) for c in chunks if len(c) >= 2]
    file = document.source.rpartition(":")[0]
    out, line = [], 1
    for chunk in chunks:
        if len(chunk) >= 2:
            out.append(Example(chunk, _shift(chunk, [True] * len(chunk)), f"{file}:{line}", document=file))
        # A chunk boundary never splits a line break (one byte, one character), so decoding the
        # chunks one by one counts the breaks of the whole text.
        line += tokenizer.decode(chunk).count("\n")
    return out


def _encode_extracted(document: Document, tokenizer: Any, max_seq_tokens: int) -> list[Example]:
    """`encode_document` of a PDF, DOCX or HTML file: each page or section encoded on its own and
    the ids joined (the text is the parts joined by PART_SEPARATOR, so only the tokens at a join can
    differ from encoding it whole), which says exactly on which part each chunk starts."""
    parts = document.extracted.parts
    file = document.source.rpartition(":")[0]
    ids: list[int] = []
    starts: list[int] = []  # token where each part begins
    for k, part in enumerate(parts):
        starts.append(len(ids))
        ids += _encode(tokenizer, part.text + (PART_SEPARATOR if k < len(parts) - 1 else ""), special=False)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    out = []
    for i in range(0, len(ids), max_seq_tokens):
        chunk = ids[i : i + max_seq_tokens]
        if len(chunk) >= 2:
            part = parts[bisect.bisect_right(starts, i) - 1]
            out.append(Example(chunk, _shift(chunk, [True] * len(chunk)), f"{file}:{part.label}", document=file))
    return out


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


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Message texts as plain text (special-token parsing off), in one call to the fast tokenizer."""
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [list(row) if text else [] for row, text in zip(ids, texts)]


def _encode(tokenizer: Any, text: str, special: bool) -> list[int]:
    """Template markup (`special`: control tokens parsed) or message text (plain)."""
    if not special:
        return encode_text(tokenizer, text)
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=False)["input_ids"])


def _shift(input_ids: list[int], trained: list[bool]) -> list[int]:
    """Targets aligned with inputs: position t predicts token t+1 when that token is trained."""
    targets = [input_ids[t + 1] if trained[t + 1] else IGNORE for t in range(len(input_ids) - 1)]
    return targets + [IGNORE]


def tokenize_records(records: list[Any], tokenizer: Any, max_seq_tokens: int) -> tuple[list[Example], list[str]]:
    """Encode every record; rows that lose all trained tokens to truncation are dropped, with a warning."""
    examples: list[Example] = []
    truncated: list[str] = []
    empty: list[str] = []
    for record in records:
        if isinstance(record, Document):
            examples.extend(encode_document(record, tokenizer, max_seq_tokens))
            continue
        if isinstance(record, PreferencePair):
            raise ConfigError(f"{record.source}: a preference row (prompt, chosen, rejected) — train preference "
                                "files with objective: dpo or orpo")
        example, was_cut = encode_conversation(record, tokenizer, max_seq_tokens)
        if was_cut:
            truncated.append(record.source)
        if example.n_trained == 0:
            empty.append(record.source)
            continue
        examples.append(example)
    warnings = []
    if truncated:
        warnings.append(f"{len(truncated)} example(s) longer than max_seq_tokens={max_seq_tokens} were truncated "
                        f"(first: {', '.join(truncated[:3])}); raise max_seq_tokens to keep them whole")
    if empty:
        warnings.append(f"{len(empty)} example(s) have no trained tokens left and were skipped "
                        f"(first: {', '.join(empty[:3])})")
    return examples, warnings
