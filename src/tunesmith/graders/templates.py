"""OpenAI's grader templates: `{{ item.a.b[0] }}` and `{{ sample.output_text }}` in a grader's strings,
looked up in the row (item) and the answer (sample), and the sample built from an answer's text.

The two namespaces are OpenAI's (developers.openai.com/api/docs/guides/graders#templating): `item` is
the data row as it is in the file, `sample` has output_text, output_json (the answer parsed, when it
is a JSON object or array), output_tools (its tool calls) and choices (chat-completions shaped).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

NAMESPACES = ("item", "sample")
_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# One step of a path: `.key` (any run of characters but . [ ] and spaces), `[3]` or `["a key"]`.
_STEP = re.compile(r"\.([^.\[\]\s]+)|\[(\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")


@dataclass(frozen=True)
class FieldPath:
    """A parsed `{{ namespace.key[0].key }}` reference."""

    namespace: str
    """item or sample."""
    keys: tuple[str | int, ...]
    """The steps below the namespace: str for an object's key, int for a list's index."""

    def __str__(self) -> str:
        return self.namespace + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in self.keys)


class MissingField(LookupError):
    """A template names a field that the row or the answer does not have; str() says which and why."""


def parse_path(text: str) -> FieldPath:
    """`item.a[0].b` -> FieldPath('item', ('a', 0, 'b')); ValueError saying what is wrong."""
    text = text.strip()
    namespace = re.match(r"[A-Za-z_]\w*", text)
    if namespace is None or namespace.group() not in NAMESPACES:
        raise ValueError(f"'{{{{{text}}}}}' must start with item. or sample. (OpenAI's only namespaces), "
                         "e.g. {{item.reference_answer}} or {{sample.output_text}}")
    keys: list[str | int] = []
    at = namespace.end()
    while at < len(text):
        step = _STEP.match(text, at)
        if step is None:
            raise ValueError(f"'{{{{{text}}}}}' cannot be read at character {at + 1} ('{text[at:at + 10]}'): "
                             "write keys as .key, list positions as [0]")
        key, index, quoted, single = step.groups()
        keys.append(int(index) if index is not None else next(k for k in (key, quoted, single) if k is not None))
        at = step.end()
    if not keys:
        raise ValueError(f"'{{{{{text}}}}}' names a whole namespace: name a field, e.g. {{{{{text}.output_text}}}}"
                         if text == "sample" else f"'{{{{{text}}}}}' names a whole namespace: name a field of "
                         "the row, e.g. {{item.reference_answer}}")
    return FieldPath(namespace.group(), tuple(keys))


def template_paths(template: str) -> Iterator[FieldPath]:
    """Every reference in a template string, in order; ValueError on the first that cannot be read."""
    for match in _TAG.finditer(template):
        yield parse_path(match.group(1))


def lookup(path: FieldPath, sample: dict[str, Any], item: dict[str, Any]) -> Any:
    """The value `path` names; MissingField when the row or the answer has no such field."""
    value: Any = item if path.namespace == "item" else sample
    for depth, key in enumerate(path.keys):
        here = FieldPath(path.namespace, path.keys[: depth + 1])
        if value is None and here.keys[:1] == ("output_json",):
            raise MissingField(f"{{{{{path}}}}}: the answer is not a JSON object or array, so it has no "
                               "output_json")
        if isinstance(value, list) and isinstance(key, str) and key.isdigit():
            key = int(key)  # `.0` written for `[0]`
        if isinstance(value, dict) and isinstance(key, str) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            where = "the row" if path.namespace == "item" else "the answer's sample"
            raise MissingField(f"{{{{{path}}}}}: {where} has no {here}" + _keys_hint(value))
    if value is None and path.keys == ("output_json",):
        raise MissingField(f"{{{{{path}}}}}: the answer is not a JSON object or array")
    return value


def _keys_hint(value: Any) -> str:
    if isinstance(value, dict):
        return f" (its keys: {', '.join(map(str, list(value)[:12])) or 'none'})"
    if isinstance(value, list):
        return f" (a list of {len(value)})"
    return f" (it is a {type(value).__name__}, not an object)"


def as_text(value: Any) -> str:
    """How a value is put into a string: text as it is, anything else as JSON (1.0, true, {...})."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """The template with every `{{ ... }}` replaced; MissingField naming the first field not found."""
    return _TAG.sub(lambda m: as_text(lookup(parse_path(m.group(1)), sample, item)), template)


def make_sample(output_text: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The `sample` namespace of an answer, as OpenAI's python graders receive it."""
    try:
        parsed = json.loads(output_text)
    except (ValueError, RecursionError):
        parsed = None
    message: dict[str, Any] = {"role": "assistant", "content": output_text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "output_text": output_text,
        # OpenAI's graders/run: "populated if the model sample is a valid JSON string"; a bare number
        # or string is not the object a {{sample.output_json.key}} template expects
        "output_json": parsed if isinstance(parsed, (dict, list)) else None,
        "output_tools": list(tool_calls or []),
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
    }
