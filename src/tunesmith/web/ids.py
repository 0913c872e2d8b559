"""Ids of the objects the servers hand out, one rule for all (OpenAI's look: `PREFIX-HEX`), and the
lookup of an id taken from a URL: one that does not match its pattern is missing before any lookup,
so `../x` or `/etc/passwd` never reaches a query or a path."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import TypeVar

from .errors import RequestError

ID_BYTES = 12
"""96 random bits: unguessable, and as long as OpenAI's ids."""
Row = TypeVar("Row")


def new_id(prefix: str) -> str:
    """An unguessable id: `prefix-` and 96 random bits in hex."""
    return f"{prefix}-{secrets.token_hex(ID_BYTES)}"


def id_pattern(prefix: str) -> re.Pattern[str]:
    """What `new_id(prefix)` makes, to check an id from a URL with `fullmatch`."""
    return re.compile(rf"{re.escape(prefix)}-[0-9a-f]{{{2 * ID_BYTES}}}")


def lookup(value: str, pattern: re.Pattern[str], get: Callable[[str], Row | None], missing: RequestError) -> Row:
    """`get(value)` for an id of `pattern`; `missing` (a 404) for anything else or nothing found."""
    found = get(value) if pattern.fullmatch(value) else None
    if found is None:
        raise missing
    return found
