"""PII-like strings in training text: e-mail addresses, phone numbers, payment card numbers.

Patterns err towards recall on real contact data while skipping the numbers FAQ text is full of
(prices, dates, ranges): a phone needs 9-15 digits, a card 13-19 digits passing the Luhn check.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# Optional + or 00 country prefix, an optional (area code), then digits with single spaces, dots or dashes.
# Never part of a longer digit run ("4111 1111 1111 1112" is not a phone followed by "1112").
_PHONE = re.compile(r"(?<![\w+.-])(?<!\d[ .-])(?:\+|00)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){5,14}(?![\w-]|[ .]\d)")


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 check every payment card number passes (ISO/IEC 7812-1)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, masked match) for each e-mail, card and phone number in `text`; kind is email|card|phone."""
    found: list[tuple[str, str]] = []
    for match in _EMAIL.finditer(text):
        found.append(("email", mask(match.group())))
    taken: list[tuple[int, int]] = []
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(("card", mask(match.group())))
            taken.append(match.span())
    for match in _PHONE.finditer(text):
        if any(s <= match.start() < e for s, e in taken):
            continue
        digits = re.sub(r"\D", "", match.group())
        if 9 <= len(digits) <= 15:
            found.append(("phone", mask(match.group())))
    return found


def mask(value: str) -> str:
    """Enough of a match to find it in the file, not enough to leak it further: 'jo***om'."""
    keep = max(1, min(3, len(value) // 4))
    return f"{value[:keep]}***{value[-keep:]}"
