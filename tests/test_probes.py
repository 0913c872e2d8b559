"""Probe data from the dependency packages, and user probe files (no model needed)."""

import json

import pytest

from tunesmith.data import DataError
from tunesmith.data.probe_files import read_probe_file
from tunesmith.forgetting.probes import (
    PROBE_SIZES,
    analogy_items,
    build_probes,
    general_prompts,
    probe_fingerprint,
    split_wiki_articles,
    strip_wiki_markup,
    trivia_items,
    wiki_articles,
    wiki_passages,
)


def test_markup_is_stripped():
    raw = ("{{Infobox|name={{nested|x}}}}\n'''Ada''' was a [[mathematician|mathematical]] pioneer"
           "<ref>cite</ref> who wrote [[Notes]] on the [http://x.org engine] in the year 1843, long before computers.\n"
           "[[File:Ada.jpg|thumb|A [[portrait]]]]\n== Life ==\n{| class=wikitable\n|cell\n|}")
    assert strip_wiki_markup(raw) == ("Ada was a mathematical pioneer who wrote Notes on the engine in the year 1843, "
                                      "long before computers.")


def test_wikipedia_probe_and_replay_articles_are_disjoint():
    probe, replay = split_wiki_articles()
    assert len(wiki_articles()) >= 90 and len(probe) == 40
    assert not set(probe) & set(replay) and len(probe) + len(replay) == len(wiki_articles())
    titles = {wiki_articles()[i][0] for i in probe}
    assert all(p.source.split(":", 1)[1].rsplit("#", 1)[0] in titles for p in wiki_passages(60))
    assert not any("{{" in p.text or "[[" in p.text or "<ref" in p.text for p in wiki_passages(60))


def test_choice_items_are_well_formed_and_seeded():
    analogies = analogy_items(2, 4)
    assert len(analogies) == 28  # 14 sections x 2
    assert len({a.source.split("(")[1] for a in analogies}) == 14
    for item in analogies + trivia_items(30, 4):
        assert len(item.choices) == 4 and len(set(item.choices)) == 4 and 0 <= item.answer < 4
    capital = next(a for a in analogies if "capital-common" in a.source)
    assert capital.context.endswith(" is to")
    assert analogy_items(2, 4) == analogies and analogy_items(2, 4, seed=1) != analogies


def test_probe_sets_grow_and_have_a_stable_fingerprint():
    sizes = [sum(len(p.items) for p in build_probes(PROBE_SIZES[name])) for name in ("train", "standard", "full")]
    assert sizes[0] < sizes[1] < sizes[2]
    assert len(general_prompts(200)) >= 100
    standard = build_probes(PROBE_SIZES["standard"])
    assert probe_fingerprint(standard, PROBE_SIZES["standard"]) == probe_fingerprint(
        build_probes(PROBE_SIZES["standard"]), PROBE_SIZES["standard"])
    assert probe_fingerprint(standard, PROBE_SIZES["standard"]) != probe_fingerprint(
        build_probes(PROBE_SIZES["train"]), PROBE_SIZES["train"])


def test_user_probe_files(tmp_path):
    choice = tmp_path / "capitals.jsonl"
    choice.write_text(json.dumps({"question": "Capital of France?", "choices": ["Paris", "Rome"],
                                  "answer": "Paris"}) + "\n")
    probe = read_probe_file(choice)
    assert probe.name == "capitals" and probe.kind == "choice" and probe.items[0].answer == 0
    assert read_probe_file(_write(tmp_path / "t.jsonl", [{"text": "abc"}])).kind == "perplexity"
    assert read_probe_file(_write(tmp_path / "p.jsonl", [{"prompt": "hi"}])).kind == "kl"
    bad = _write(tmp_path / "bad.jsonl", [{"text": "ok"}, {"prompt": "mixed"}, {"question": "q"}, {"other": 1}])
    with pytest.raises(DataError) as info:
        read_probe_file(bad)
    text = str(info.value)
    assert "bad.jsonl:2" in text and "bad.jsonl:3" in text and "bad.jsonl:4" in text
    with pytest.raises(DataError, match="answer"):
        read_probe_file(_write(tmp_path / "a.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 5}]))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
