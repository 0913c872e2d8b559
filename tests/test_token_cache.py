"""The tokenized-data cache: built once, memory-mapped, keyed by content, tokenizer, template and length."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import tunesmith.data.cache
from conftest import build_tokenizer, write_jsonl
from tunesmith.data import file_sha256, prepare_data, read_records, tokenize_records
from tunesmith.data.cache import entry_path, tokenize_file


@pytest.fixture
def faq_path(faq_file):
    return faq_file("chat")


def test_cached_examples_equal_fresh_ones_and_are_memory_mapped(faq_path, tiny_tokenizer):
    fresh, warnings = tokenize_records(read_records(faq_path), tiny_tokenizer, 64)
    sha = file_sha256(faq_path)
    first, _ = tokenize_file(faq_path, sha, tiny_tokenizer, 64)
    again, again_warnings = tokenize_file(faq_path, sha, tiny_tokenizer, 64)
    assert again_warnings == warnings
    assert [e.source for e in again] == [e.source for e in fresh]
    for cached, plain in zip(again, fresh):
        assert list(cached.input_ids) == plain.input_ids and list(cached.targets) == plain.targets
        assert cached.n_trained == plain.n_trained
    assert isinstance(again[0].input_ids.base, np.memmap) or isinstance(again[0].input_ids, np.memmap)


def test_a_cache_hit_does_not_tokenize(faq_path, tiny_tokenizer, monkeypatch):
    prepare_data(str(faq_path), None, tiny_tokenizer, 64, 0.25, 0)

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(tunesmith.data.cache, "tokenize_records", fail)
    data = prepare_data(str(faq_path), None, tiny_tokenizer, 64, 0.25, 0)
    assert data.train and data.val


def test_the_key_changes_with_content_path_template_and_length(faq_path, tiny_tokenizer, tmp_path):
    sha = file_sha256(faq_path)
    other_template = build_tokenizer(chat_template=tiny_tokenizer.chat_template.replace("helpful", "careful"))
    keys = {entry_path(faq_path, sha, tiny_tokenizer, 64), entry_path(faq_path, sha, tiny_tokenizer, 128),
            entry_path(faq_path, sha, other_template, 64),
            entry_path(tmp_path / "x.jsonl", file_sha256(write_jsonl(tmp_path / "x.jsonl", [{"text": "other"}])),
                       tiny_tokenizer, 64),
            entry_path(tmp_path / "copy.jsonl", sha, tiny_tokenizer, 64)}  # same content elsewhere: rows named anew
    assert len(keys) == 5
    tokenize_file(faq_path, sha, tiny_tokenizer, 64)
    with_other, _ = tokenize_file(faq_path, sha, other_template, 64)
    assert "careful" in other_template.decode(list(with_other[0].input_ids))


def test_a_damaged_entry_is_rebuilt(faq_path, tiny_tokenizer):
    sha = file_sha256(faq_path)
    tokenize_file(faq_path, sha, tiny_tokenizer, 96)
    entry = entry_path(faq_path, sha, tiny_tokenizer, 96)
    (entry / "targets.npy").unlink()  # replaced, not rewritten in place: a mapped file must never shrink
    np.save(entry / "targets.npy", np.zeros(3, dtype=np.int32))  # a truncated file
    fresh, _ = tokenize_records(read_records(faq_path), tiny_tokenizer, 96)
    rebuilt, _ = tokenize_file(faq_path, sha, tiny_tokenizer, 96)
    assert [list(e.targets) for e in rebuilt] == [list(e.targets) for e in fresh]


def test_a_passed_data_check_is_not_repeated_but_its_warnings_are(faq_path, tiny_model_dir, tiny_tokenizer,
                                                                    monkeypatch):
    from rich.console import Console

    from tunesmith import load_config
    from tunesmith.data import gate as recipe
    rows = [json.loads(line) for line in faq_path.read_text().splitlines()]
    data = write_jsonl(faq_path.parent / "dup.jsonl", rows + rows[:1])  # a duplicate row: a warning
    config = load_config(None, {"data": str(data), "model": str(tiny_model_dir)})
    calls = []
    real = recipe.check_files
    monkeypatch.setattr(recipe, "check_files", lambda *a, **k: calls.append(a) or real(*a, **k))
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        recipe.check_data(config, tiny_tokenizer, Console(file=out, width=200))
        outputs.append(out.getvalue())
    assert len(calls) == 1
    assert "duplicate" in outputs[0].lower() and outputs[1] == outputs[0]
    write_jsonl(data, rows + rows[:2])  # new content: checked again
    recipe.check_data(config, tiny_tokenizer, Console(file=io.StringIO()))
    assert len(calls) == 2


def test_a_reused_check_names_this_checkouts_path(tmp_path, tiny_tokenizer, monkeypatch):
    """A `pkg:` file lies elsewhere in every clone: warnings remembered in one are read back with the
    path of the other (they printed another clone's absolute path)."""
    import importlib
    import sys

    from tunesmith.data.cache import passed_check, record_check
    from tunesmith.data.records import resolve_data_path

    rows = '{"prompt": "q", "completion": "a"}\n'
    for clone in ("one", "two"):
        package = tmp_path / clone / "faqpkg"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data.jsonl").write_text(rows)

    def use(clone: str) -> str:
        monkeypatch.setattr(sys, "path", [str(tmp_path / clone), *[p for p in sys.path if str(tmp_path) not in p]])
        sys.modules.pop("faqpkg", None)
        importlib.invalidate_caches()
        return str(resolve_data_path("pkg:faqpkg/data.jsonl"))

    first = use("one")
    record_check("pkg:faqpkg/data.jsonl", None, tiny_tokenizer, 64, [f"{first}:1: (row): a warning"])
    second = use("two")
    assert first != second
    assert passed_check("pkg:faqpkg/data.jsonl", None, tiny_tokenizer, 64) == [f"{second}:1: (row): a warning"]
