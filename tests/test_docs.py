"""The reference pages against the code: every default their tables give (docs/training.md's config
keys, serve.md's and server.md's flags) is the code's, and every config field is documented."""

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from tunesmith.config import ForgettingBudget, ForgettingConfig, LoraConfig, PreferenceConfig, TrainConfig
from tunesmith.settings import ServeLimits, ServerLimits

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Key prefix -> the dataclass holding the keys under it; the longest matching prefix wins.
SECTIONS = {"forgetting.budget.": ForgettingBudget, "forgetting.": ForgettingConfig, "lora.": LoraConfig,
            "preference.": PreferenceConfig, "": TrainConfig}
REQUIRED, WORDS = object(), object()
"""A cell that says the key is required, and one that describes a derived default in words."""


def doc_table(page: str, heading: str, header: str) -> dict[str, str]:
    """{first cell: second cell} of the first table under `heading` in docs/`page` whose header row is `header`."""
    section = ("\n" + (DOCS / page).read_text(encoding="utf-8")).split(f"\n{heading}\n", 1)[1]
    rows = section[section.index(header):].splitlines()[2:]  # past the header and the |---| line
    table = {}
    for row in rows:
        if not row.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip().strip("|"))]  # not at `a\|b`
        table[cells[0]] = cells[1]
    return table


def documented_value(cell: str) -> Any:
    """What a default cell says: a literal (number, boolean, none, `string`, []), REQUIRED, or WORDS.
    A number may carry a gloss in parentheses: `536870912 (512 MiB)`."""
    cell = re.sub(r"^(-?\d[\d.eE-]*) \([^)]*\)$", r"\1", cell)
    quoted = re.fullmatch(r"`([^`]*)`", cell)
    text = quoted.group(1) if quoted else cell
    if re.fullmatch(r"-?\d+(\.\d+)?([eE]-?\d+)?", text):
        return float(text)
    if quoted:
        return text
    literals = {"(required)": REQUIRED, "none": None, "true": True, "false": False, "[]": []}
    return literals.get(cell.lower(), WORDS)


def field_default(cls: type, name: str) -> Any:
    """The field's default, REQUIRED when it has none; KeyError for a key that is not a field."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return REQUIRED


def assert_documented(key: str, documented: Any, actual: Any) -> None:
    if documented is WORDS:  # "from data size", "per method": derived when the field is left None
        assert actual is None, f"{key}: the docs describe a derived default, the field's is {actual!r}"
    elif isinstance(documented, float):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool) and actual == documented, \
            f"{key}: the docs say {documented:g}, the field's default is {actual!r}"
    else:
        assert actual == documented and type(actual) is type(documented), \
            f"{key}: the docs say {documented!r}, the field's default is {actual!r}"


def owner(key: str) -> tuple[type, str]:
    prefix = next(p for p in SECTIONS if key.startswith(p))
    return SECTIONS[prefix], key[len(prefix):]


CONFIG_KEYS = doc_table("training.md", "## Config keys", "| key | default | meaning |")


def test_the_config_table_is_found():
    assert len(CONFIG_KEYS) > 30 and "`lora.r`" in CONFIG_KEYS  # a parser that found nothing passes nothing


@pytest.mark.parametrize("key", sorted(CONFIG_KEYS), ids=lambda k: k.strip("`"))
def test_documented_config_default_is_the_fields(key):
    name = key.strip("`")
    cls, field = owner(name)
    actual = field_default(cls, field)  # KeyError: the docs/training.md documents a key that does not exist
    cell = CONFIG_KEYS[key]
    if cell == "":  # a section's own row, such as `forgetting`: its keys follow
        assert dataclasses.is_dataclass(actual), f"{name} has no default in docs/training.md but is not a section"
        return
    assert_documented(name, documented_value(cell), actual)


def test_every_config_field_is_documented():
    keys = []
    for prefix, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(field_default(cls, field.name)):  # sections hold keys, not values
                keys.append(prefix + field.name)
    missing = [k for k in keys if f"`{k}`" not in CONFIG_KEYS]
    assert not missing, f"docs/training.md's config table lacks {missing}"


def test_documented_serve_defaults_are_the_codes(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    check_flag_table("serve", [str(tmp_path)], "serve.md",
                     "# `tunesmith serve`: an OpenAI-compatible endpoint for one run", ServeLimits, "`--max-tokens`")


def test_documented_server_defaults_are_the_codes(monkeypatch):
    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    check_flag_table("server", [], "server.md", "# `tunesmith server`: OpenAI's fine-tuning API on your own machine",
                     ServerLimits, "`--max-upload-bytes`")


def check_flag_table(command_name: str, args: list[str], page: str, heading: str, limits: type,
                     expected_row: str) -> None:
    """Every flag of the command is in the first cell of a row of its table in docs/`page`, and each
    row's first flag has the default the command gets without flags (a flag left None overrides a
    field of `limits`: that field's default)."""
    from tunesmith.cli import main

    command = main.commands[command_name]
    values = command.make_context(command_name, args).params  # what the command gets without flags
    names = {opt: p.name for p in command.params for opt in p.opts}
    table = doc_table(page, heading, "| flag | default | meaning |")
    assert expected_row in table
    documented = {flag for row in table for flag in re.findall(r"`(--[a-z-]+)", row)}
    undocumented = [opt for p in command.params for opt in p.opts if opt.startswith("--") and opt not in documented]
    assert not undocumented, f"docs/{page}'s flag table lacks {undocumented}"
    for row, cell in table.items():
        flag = row.split("`")[1].split()[0]
        name = names[flag]  # KeyError: the page documents a flag that does not exist
        actual = values[name] or None  # an unrepeated --allowed-host is (), not None
        if actual is None and name in {f.name for f in dataclasses.fields(limits)}:
            actual = field_default(limits, name)  # the flag overrides this limit
        assert_documented(flag, documented_value(cell), actual)
