"""Training with `retrieval:` (RAFT): the config section, training prompts built by the prompt builder
compare uses, the gold and hand-off shares, hand-offs and citations recognised, the run's retrieval
settings used by compare, chat and serve, and compare.json's found / missed / unanswerable splits."""

from __future__ import annotations

import dataclasses
import json
import re
import zlib

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import FAQ, write_jsonl
from tunesmith.commands import compare as compare_module
from tunesmith.config import config_from_dict, load_config
from tunesmith.data import QA, encode_prompt
from tunesmith.errors import ConfigError
from tunesmith.evaluation.handoff import (
    add_rates,
    citation_correct,
    cited_numbers,
    handoff_flags,
    is_handoff,
    with_sources,
)
from tunesmith.retrieval import RetrievalSettings, Retriever
from tunesmith.retrieval.context import CONTEXT_HEADER, context_header
from tunesmith.retrieval.raft import assign_roles, raft_examples, run_retrieval
from tunesmith.retrieval.recall import recall_at_k
from tunesmith.settings import DEFAULT_HANDOFF, MIN_RELEVANCE_MISS, RetrievalTrainConfig

HANDOFF = DEFAULT_HANDOFF


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("tunesmith.retrieval.Embedder.load",
                        classmethod(lambda cls: pytest.fail("bm25 needs no model")))
    monkeypatch.setattr(compare_module, "general_texts", lambda: ["The cat sat on the mat.", "It is what it is."])


# Questions that share a word with their own answer (so BM25 finds it first) and one with every answer
# (so every passage is ranked), answers that share under half their words (so only its own holds
# one); 20 rows make the shares' counts exact (0.5 -> 10, 0.25 -> 5).
ROWS = [(f"What colour is the {thing}?", f"{thing.title()}: {colour} colour.")
        for thing, colour in zip(["door", "roof", "fence", "gate", "shed", "barn", "wall", "porch", "stair", "floor",
                                  "window", "chimney", "garage", "attic", "cellar", "deck", "pool", "kiosk", "tower",
                                  "bridge"],
                                 ["red", "blue", "green", "white", "black", "grey", "pink", "brown", "gold", "teal",
                                  "cyan", "lime", "navy", "rust", "sand", "plum", "mint", "ruby", "jade", "iris"])]


def questions() -> list[QA]:
    return [QA([{"role": "user", "content": q}], a, f"data.jsonl:{i + 1}") for i, (q, a) in enumerate(ROWS)]


@pytest.fixture
def knowledge(tmp_path):
    return write_jsonl(tmp_path / "kb.jsonl", [{"text": a} for _, a in ROWS])


@pytest.fixture
def retriever(knowledge):
    return Retriever.load(knowledge, RetrievalSettings(retriever="bm25", top_k=3, handoff=HANDOFF, cite=True))


def section(knowledge, **kw) -> RetrievalTrainConfig:
    return RetrievalTrainConfig(knowledge=str(knowledge), retriever="bm25", top_k=3, **{"min_relevance": 0, **kw})


class WordEmbedder:
    """Stands in for all-MiniLM-L6-v2 in the relevance floor: unit bag-of-words vectors, so texts that
    share words have a high cosine."""

    name = "words"

    def encode(self, texts):
        out = np.zeros((len(texts), 512), np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % 512] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_the_retrieval_section_is_typed_checked_and_round_trips(tmp_path, knowledge):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"data": "d.jsonl", "retrieval": {"knowledge": "kb.jsonl",
                                                                                        "gold_share": 0.7}}))
    config = load_config(tmp_path / "run.yaml")
    assert config.retrieval.knowledge == str(knowledge)  # relative to the config file, like data
    assert config.retrieval.gold_share == 0.7 and config.retrieval.handoff_share is None
    assert config.retrieval.handoff == DEFAULT_HANDOFF and config.retrieval.cite
    assert config.retrieval.top_k == RetrievalSettings.top_k
    assert config.retrieval.retriever == RetrievalSettings.retriever
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    assert config_from_dict({"data": "d"}).retrieval is None
    with pytest.raises(ConfigError, match="'retrieval.gold_shar' \\(did you mean 'retrieval.gold_share'"):
        config_from_dict({"data": "d", "retrieval": {"knowledge": "k", "gold_shar": 1}})
    with pytest.raises(ConfigError, match="gold_share \\+ handoff_share must not exceed 1"):
        config_from_dict({"data": "d", "retrieval": {"knowledge": "k", "gold_share": 0.8, "handoff_share": 0.3}})
    with pytest.raises(ConfigError, match="'retrieval.top_k' must be at least 1"):
        RetrievalTrainConfig(knowledge="k", top_k=0)
    with pytest.raises(ConfigError, match="'retrieval' must be a mapping"):
        config_from_dict({"data": "d", "retrieval": "kb.jsonl"})


def test_roles_take_exactly_the_configured_shares():
    roles = assign_roles(20, 0.5, 0.25, seed=3)
    assert (roles.count("gold"), roles.count("handoff"), roles.count("distractors")) == (10, 5, 5)
    assert roles == assign_roles(20, 0.5, 0.25, seed=3) and roles != assign_roles(20, 0.5, 0.25, seed=4)


def test_training_prompts_are_what_compare_retrieves_and_shares_hold(retriever, knowledge, tiny_tokenizer):
    config = section(knowledge, gold_share=0.5, handoff_share=0.25)
    examples, summary = raft_examples(questions(), retriever, config, tiny_tokenizer, 1024, seed=0)
    roles = [e.role for e in examples]
    assert (roles.count("gold"), roles.count("handoff"), roles.count("distractors")) == (10, 5, 5)
    assert (summary.gold_share, summary.handoff_share) == (0.5, 0.25) and summary.measured_recall == 1.0
    budget = 1024 - 64  # compare's prompt budget on the tiny model is larger than these prompts: no cut
    for q, e in zip(questions(), examples):
        prompt, answer = e.messages[:-1], e.messages[-1]["content"]
        holding = [p.text == q.reference for p in e.passages]
        if e.role == "gold":
            # The retriever finds every answer here, so the prompt is compare's prompt for the question.
            compared = retriever.augment_with(q.messages, retriever.retrieve([q.messages[-1]["content"]])[0],
                                              tiny_tokenizer, budget)
            assert encode_prompt(prompt, tiny_tokenizer) == encode_prompt(compared, tiny_tokenizer)
            assert any(holding) and answer == f"{q.reference} [{holding.index(True) + 1}]"
        else:
            assert len(e.passages) == 3 and not any(holding)  # mined distractors, the answer's passage removed
            assert answer == (HANDOFF if e.role == "handoff" else q.reference)
        assert prompt[-1]["content"].startswith(context_header(retriever.settings))
        assert HANDOFF in prompt[-1]["content"] and "[1] " in prompt[-1]["content"]
    again, _ = raft_examples(questions(), retriever, config, tiny_tokenizer, 1024, seed=0)
    assert [e.messages for e in again] == [e.messages for e in examples]  # a rerun or resume sees the same prompts


def test_gold_share_defaults_to_the_measured_recall(knowledge, tiny_tokenizer):
    # At k = 1 BM25 misses some answers when the questions lose their telling word: recall is below 1.
    qs = [QA([{"role": "user", "content": "What colour is it painted every spring?" if i % 3 == 0
               else q}], a, f"d:{i}") for i, (q, a) in enumerate(ROWS)]
    retriever = Retriever.load(knowledge, RetrievalSettings(retriever="bm25", top_k=1, handoff=HANDOFF))
    config = RetrievalTrainConfig(knowledge=str(knowledge), retriever="bm25", top_k=1, cite=False, min_relevance=0)
    examples, summary = raft_examples(qs, retriever, config, tiny_tokenizer, 1024, seed=0)
    found = [[p.text == q.reference for p in retriever.retrieve([q.messages[-1]["content"]], 1)[0]] for q in qs]
    recall = recall_at_k(found, [1])[1]
    assert 0 < recall < 1 and summary.measured_recall == pytest.approx(recall)
    assert summary.gold_share == pytest.approx(recall) and summary.handoff_share == pytest.approx(1 - recall)
    roles = [e.role for e in examples]
    assert roles.count("gold") == round(recall * 20) and roles.count("handoff") == 20 - round(recall * 20)
    assert all(not e.messages[-1]["content"].endswith("]") for e in examples)  # cite off: no citation


def test_the_relevance_floor_leaves_a_prompt_without_passages(knowledge, tiny_tokenizer, monkeypatch):
    settings = RetrievalSettings(retriever="bm25", top_k=3, handoff=HANDOFF, cite=True)
    plain = Retriever.load(knowledge, settings, embedder=WordEmbedder())
    question = [{"role": "user", "content": "What colour is the door?"}]
    passages = plain.retrieve([question[0]["content"]])[0]
    scores = plain.relevance(question[0]["content"], passages)
    expected = WordEmbedder().encode([p.text for p in passages]) @ WordEmbedder().encode([question[0]["content"]])[0]
    assert scores == pytest.approx(expected.tolist(), abs=1e-6) and 0 < max(scores) < 1
    for floor, kept in ((None, True), (0.0, True), (max(scores) - 1e-3, True), (max(scores) + 1e-3, False)):
        floored = Retriever.load(knowledge, dataclasses.replace(settings, min_relevance=floor), embedder=WordEmbedder())
        assert floored.relevant(question[0]["content"], passages) == (passages if kept else [])
        prompt = floored.augment_with(question, passages, tiny_tokenizer, 1024)[-1]["content"]
        # Without passages the prompt keeps its instruction, so the run gives its hand-off.
        assert prompt.startswith(context_header(settings)) and ("[1] " in prompt) == kept
    # chat (and serve, the server, the playground: the same `find` and prompt builder) of a run with a floor.
    from types import SimpleNamespace

    from tunesmith.retrieval.raft import chat_retrieval

    monkeypatch.setattr("tunesmith.retrieval.Embedder.load", classmethod(lambda cls: WordEmbedder()))
    for floor, kept in ((max(scores) - 1e-3, True), (max(scores) + 1e-3, False)):
        run = SimpleNamespace(retrieval=section(knowledge, min_relevance=floor))
        model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048))
        augment, cite = chat_retrieval(run, None, RetrievalSettings(), model, tiny_tokenizer, 16)
        assert ("[1] " in augment(question)[-1]["content"]) == kept
        assert bool(cite("Red colour. [1]")) == kept  # a citation names a source only where passages were given
    with pytest.raises(ConfigError, match="'retrieval.min_relevance' must be in \\[0, 1\\], got 1.5"):
        config_from_dict({"data": "d", "retrieval": {"knowledge": "k", "min_relevance": 1.5}})


def test_a_measured_floor_trains_the_handoff_on_prompts_without_passages(knowledge, tiny_tokenizer):
    # Questions 0, 5, 10, 15 share no word with their answer beyond "colour": their best passage is weak.
    qs = [QA([{"role": "user", "content": "Which colour was chosen for it last year?" if i % 5 == 0 else q}], a,
             f"d:{i}") for i, (q, a) in enumerate(ROWS)]
    retriever = Retriever.load(knowledge, RetrievalSettings(retriever="bm25", top_k=3, handoff=HANDOFF, cite=True),
                               embedder=WordEmbedder())
    examples, summary = raft_examples(qs, retriever, section(knowledge, min_relevance=None, gold_share=0.6,
                                                             handoff_share=0.3), tiny_tokenizer, 1024, seed=0)
    # The floor: the MIN_RELEVANCE_MISS quantile of the best passage's relevance over the questions whose
    # top 3 hold their answer, computed here from the retriever's own ranking.
    best = []
    for q in qs:
        top = retriever.retrieve([q.messages[-1]["content"]], 3)[0]
        if any(p.text == q.reference for p in top):
            best.append(max(retriever.relevance(q.messages[-1]["content"], top)))
    assert summary.min_relevance == pytest.approx(float(np.quantile(best, MIN_RELEVANCE_MISS)), abs=1e-4)
    assert summary.without_passages == sum(not e.passages for e in examples) > summary.roles["handoff"] == 6
    for q, e in zip(qs, examples):
        answer = e.messages[-1]["content"]
        if e.role == "handoff" or not e.passages:  # hand-off rows have no passage; nor has a row under the floor
            assert not e.passages and answer == HANDOFF and "[1] " not in e.messages[-2]["content"]
        else:
            assert max(retriever.relevance(q.messages[-1]["content"], e.passages)) >= summary.min_relevance
            assert answer != HANDOFF
    resolved = dataclasses.replace(section(knowledge, min_relevance=None), min_relevance=summary.min_relevance)
    assert resolved.answer_settings().min_relevance == summary.min_relevance  # what the run answers with


def test_the_floor_embeds_each_text_once(knowledge, tiny_tokenizer, monkeypatch):
    encoded: list[str] = []
    embedder = WordEmbedder()
    monkeypatch.setattr(embedder, "encode", lambda texts: encoded.extend(texts) or WordEmbedder().encode(texts))
    retriever = Retriever.load(knowledge, RetrievalSettings(retriever="bm25", top_k=3, handoff=HANDOFF, cite=True),
                               embedder=embedder)
    raft_examples(questions(), retriever, section(knowledge, min_relevance=None), tiny_tokenizer, 1024, seed=0)
    assert encoded and len(encoded) == len(set(encoded))  # measured floor, chosen passages, prompts: once each
    monkeypatch.setattr("tunesmith.retrieval.context.EMBED_MEMO", 3)
    retriever.embed(["a", "b", "c", "d"])
    assert list(retriever.vectors) == ["b", "c", "d"]  # the newest kept


def test_a_handoff_is_recognised_in_its_light_variants():
    assert is_handoff(HANDOFF, HANDOFF)
    assert is_handoff("i can't find that in our documentation; I'll pass your question to a colleague [2]", HANDOFF)
    assert is_handoff("Sorry. I cannot find that in our documentation, I will pass your question to a colleague.",
                      HANDOFF)
    assert not is_handoff("The door is painted red every spring.", HANDOFF)
    assert not is_handoff("Our documentation says the door is red.", HANDOFF)
    assert handoff_flags([HANDOFF, "red", HANDOFF.upper()], HANDOFF).tolist() == [1.0, 0.0, 1.0]


def test_citations_map_to_their_passages_sources():
    sources = ["permits.pdf:p12", "faq.jsonl:3"]
    assert cited_numbers("It takes four weeks [2], see [1] and [2].") == [2, 1]
    assert with_sources("It takes four weeks. [2]", sources) == "It takes four weeks. [faq.jsonl:3]"
    assert with_sources("See [1] or [7].", sources) == "See [permits.pdf:p12] or [7]."  # no passage 7: left
    assert citation_correct("Red. [2]", [False, True, False]) == 1.0
    assert citation_correct("Red. [1]", [False, True, False]) == 0.0 and citation_correct("Red.", [True]) == 0.0


def test_split_rates_on_a_known_outcome():
    """Two found questions (base+rag answers one, hands off on the other) and two missed ones."""
    from tunesmith.commands.compare import COMPARISONS, SYSTEMS, per_question_scores, summarize_split

    qs = [QA([{"role": "user", "content": q}], a, f"d:{i}") for i, (q, a) in enumerate(ROWS[:2])]
    said = {"base": ["x", "y"], "tuned": ["x", "y"], "base+rag": [ROWS[0][1] + " [1]", HANDOFF],
            "tuned+rag": [ROWS[0][1] + " [2]", ROWS[1][1]]}
    scores = {s: per_question_scores(said[s], qs, []) for s in SYSTEMS}
    split = summarize_split(scores, np.ones(2, bool))
    flags = {s: handoff_flags(said[s], HANDOFF) for s in SYSTEMS}
    cited = {s: np.array([citation_correct(a, [True, False]) for a in said[s]]) for s in ("base+rag", "tuned+rag")}
    found = add_rates(split, "found", flags, COMPARISONS, cited)
    assert found["systems"]["base+rag"]["handoff_rate"]["value"] == 0.5
    assert found["systems"]["base+rag"]["false_handoff_rate"]["value"] == 0.5
    assert found["systems"]["tuned+rag"]["false_handoff_rate"]["value"] == 0.0
    assert found["systems"]["base+rag"]["citation_accuracy"]["value"] == 0.5  # [1] holds it; the hand-off cites none
    assert found["systems"]["tuned+rag"]["citation_accuracy"]["value"] == 0.0  # [2] is not the gold passage
    assert found["deltas"]["tuning_with_rag"]["handoff_rate"]["delta"] == -0.5
    missed = add_rates(summarize_split(scores, np.ones(2, bool)), "missed", flags, COMPARISONS)
    assert missed["systems"]["base+rag"]["made_up_rate"]["value"] == 0.5
    assert missed["systems"]["tuned+rag"]["made_up_rate"]["value"] == 1.0
    assert "false_handoff_rate" not in missed["systems"]["base"]
    assert "citation_accuracy" not in missed["systems"]["base+rag"]


def test_commands_answer_a_raft_run_with_its_retrieval_settings(knowledge):
    class Run:
        retrieval = RetrievalTrainConfig(knowledge=str(knowledge), retriever="bm25", top_k=2, handoff="Ask Bo.")

    chosen, settings = run_retrieval(Run(), None, RetrievalSettings())
    assert chosen == str(knowledge) and settings.retriever == "bm25" and settings.top_k == 2
    assert settings.handoff == "Ask Bo." and settings.cite and settings.min_relevance is None
    Run.retrieval = dataclasses.replace(Run.retrieval, min_relevance=0.4)
    assert run_retrieval(Run(), None, RetrievalSettings())[1].min_relevance == 0.4  # the run's floor
    _, given = run_retrieval(Run(), "other.jsonl", RetrievalSettings(top_k=5))
    assert given.top_k == 5 and given.retriever == "bm25"  # a flag the user set wins
    assert run_retrieval(object(), None, RetrievalSettings()) == (None, RetrievalSettings())
    assert context_header(RetrievalSettings()) == CONTEXT_HEADER  # plain runs keep today's prompt


@pytest.fixture(scope="module")
def raft_run(tiny_model_dir, tmp_path_factory):
    """Two steps of training with `retrieval:` on the FAQ, the FAQ's answers as knowledge."""
    from tunesmith import train

    folder = tmp_path_factory.mktemp("raft")
    data = write_jsonl(folder / "faq.jsonl", [{"messages": [{"role": "user", "content": q},
                                                            {"role": "assistant", "content": a}]} for q, a in FAQ])
    kb = write_jsonl(folder / "kb.jsonl", [{"text": a} for _, a in FAQ])
    config = load_config(None, {"data": str(data), "model": str(tiny_model_dir), "output": str(folder / "run"),
                                "max_steps": 2, "batch_size": 4, "lr": 1e-2,
                                "forgetting": {"measure_during_training": False},
                                "retrieval": {"knowledge": str(kb), "retriever": "bm25", "top_k": 2,
                                              "handoff_share": 0.3, "min_relevance": 0}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_CACHE_DIR", str(folder / "cache"))
        train(config, show_progress=False)
    return folder / "run"


def test_a_raft_run_records_its_settings_and_compare_reports_the_splits(raft_run, monkeypatch):
    from tunesmith.cli import main
    from tunesmith.run import RunDir

    saved = RunDir.open(raft_run).config().retrieval
    assert saved.retriever == "bm25" and saved.top_k == 2 and saved.handoff_share == 0.3
    assert saved.gold_share is not None and 0 < saved.gold_share <= 0.7  # measured, and filled into config.yaml
    out = CliRunner().invoke(main, ["compare", "--run", str(raft_run), "--json",  # the run's knowledge, by default
                                    "--limit", "5", "--seen", "2", "--max-new-tokens", "6"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["retrieval"]["retriever"] == "bm25" and result["retrieval"]["top_k"] == 2  # the run's, by default
    splits = result["splits"]
    assert "unanswerable" in splits and splits["unanswerable"]["n"] == splits["unseen"]["n"]
    assert splits.get("found", {"n": 0})["n"] + splits.get("missed", {"n": 0})["n"] == splits["unseen"]["n"]
    assert result["choice"] in ("raft", "both", "rag", "fine-tune", "undecided")
    assert "made-up rate vs base+RAG" in result["recommendation"]  # the RAFT rules were read
    for name in ("found", "missed", "unanswerable"):
        if name not in splits:
            continue
        for system in splits[name]["systems"].values():
            assert "handoff_rate" in system and "token_f1" in system
            assert ("false_handoff_rate" if name == "found" else "made_up_rate") in system
        assert "handoff_rate" in splits[name]["deltas"]["tuning_with_rag"]
    assert result["knowledge"] == saved.knowledge


def test_compare_without_knowledge_needs_a_raft_run(tiny_run):
    from tunesmith.cli import main

    out = CliRunner().invoke(main, ["compare", "--run", str(tiny_run), "--limit", "1"])
    assert out.exit_code != 0 and "compare needs --knowledge" in out.output


def test_a_raft_run_trains_on_its_shares_and_holds_out_the_same_rows(raft_run, tiny_tokenizer):
    from tunesmith.data import prepare_data

    saved = RunDir_config(raft_run)
    written = sorted((raft_run.parent / "cache" / "raft").glob("faq-raft-*.jsonl"))
    assert len(written) == 1
    rows = [json.loads(line)["messages"] for line in written[0].read_text().splitlines()]
    answers = [r[-1]["content"] for r in rows]
    n = len(FAQ)  # each answer is a passage of the knowledge source: every row has a gold passage
    assert answers.count(saved.retrieval.handoff) == round(saved.retrieval.handoff_share * n)
    assert sum(a.endswith("]") for a in answers) == round(saved.retrieval.gold_share * n)  # gold rows cite
    assert all(r[-2]["content"].endswith(f"Question: {q}") for r, (q, _) in zip(rows, FAQ))  # the rows' order
    def split(path):
        return [e.source.split(":")[-1] for e in prepare_data(str(path), None, tiny_tokenizer, 1024,
                                                                saved.val_fraction, saved.seed).val]

    assert split(written[0]) == split(saved.data)  # the same rows held out as without retrieval


def test_eval_of_a_raft_run_measures_the_prompts_it_was_trained_on(raft_run, tiny_tokenizer, monkeypatch):
    from tunesmith.commands.evaluate import TASK_SIZES, task_examples

    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(raft_run.parent / "cache"))
    config = RunDir_config(raft_run)
    task = task_examples(config, tiny_tokenizer, TASK_SIZES["standard"])
    header = context_header(config.retrieval.answer_settings())
    assert task.pairs and all(messages[-1]["content"].startswith(header) for messages, _ in task.pairs)
    assert all("-raft-" in e.source for e in task.val)  # the validation loss on the RAFT prompts
    plain = task_examples(load_config(None, {"data": config.data}), tiny_tokenizer, TASK_SIZES["standard"])
    assert [e.source.split(":")[-1] for e in plain.val] == [e.source.split(":")[-1] for e in task.val]


def test_chat_answers_a_raft_run_with_its_knowledge_by_default(raft_run, monkeypatch):
    import tunesmith.commands.chat
    from tunesmith.cli import main
    from tunesmith.run import RunDir

    prompts: list[list[dict[str, str]]] = []
    encode = tunesmith.commands.chat.encode_prompt
    monkeypatch.setattr(tunesmith.commands.chat, "encode_prompt", lambda m, t: prompts.append(m) or encode(m, t))
    out = CliRunner().invoke(main, ["chat", str(raft_run), "--max-new-tokens", "4"],  # no --knowledge
                             input="Who decides on permits?\n/exit\n")
    assert out.exit_code == 0, out.output
    settings = RunDir.open(raft_run).config().retrieval.answer_settings()
    asked = prompts[0][-1]["content"]
    assert asked.startswith(context_header(settings)) and settings.handoff in asked  # the run's prompt
    passages = Retriever.load(settings_knowledge(raft_run), settings).retrieve(["Who decides on permits?"])[0]
    assert 1 <= len(passages) <= 2 and "[3] " not in asked  # bm25, top_k 2: the run's retriever
    assert all(f"[{i}] {p.text}" in asked for i, p in enumerate(passages, start=1))


def settings_knowledge(run):
    from tunesmith.run import RunDir

    return RunDir.open(run).config().retrieval.knowledge


def test_chat_names_the_sources_an_answer_cites(monkeypatch):
    from tunesmith.commands.chat import chat_loop
    from tunesmith.evaluation.handoff import sources_line

    monkeypatch.setattr("tunesmith.commands.chat.stream_answer", lambda *a, **k: "Four weeks. [2]")
    monkeypatch.setattr("tunesmith.commands.chat.encode_prompt", lambda m, t: [])
    lines, out = iter(["How long?", "/exit"]), []
    chat_loop(None, None, None, lambda p: next(lines), out.append,
              cite=lambda answer: sources_line(answer, ["faq.jsonl:1", "permits.pdf:p12"]))
    assert "sources: [2] permits.pdf:p12\n" in out


def test_train_knowledge_flag_sets_the_section(knowledge):
    from tunesmith.retrieval.raft import with_knowledge

    plain = config_from_dict({"data": "d"})
    assert with_knowledge(plain, None) is plain
    assert with_knowledge(plain, str(knowledge)).retrieval == RetrievalTrainConfig(knowledge=str(knowledge))
    tuned = config_from_dict({"data": "d", "retrieval": {"knowledge": "old", "top_k": 5}})
    assert with_knowledge(tuned, "new").retrieval == RetrievalTrainConfig(knowledge="new", top_k=5)


@pytest.mark.parametrize("made_up, facts, false_handoff, choice", [
    ("down", "flat", "flat", "raft"),    # fewer made-up answers, the facts kept
    ("flat", "flat", "flat", "rag"),     # no fall of made-up answers: the usual rules decide
    ("down", "down", "flat", "rag"),     # fewer made-up answers, but facts lost where the passages hold them
    ("down", "flat", "up", "rag"),       # more false hand-offs
])
def test_the_raft_branch_of_the_recommendation(made_up, facts, false_handoff, choice):
    from tunesmith.evaluation.recommend import Delta, Evidence, RaftEvidence, recommend

    d = {"up": Delta(0.2, 0.1, 0.3), "down": Delta(-0.2, -0.3, -0.1), "flat": Delta(0.0, -0.1, 0.1)}
    usual = Evidence(d["up"], d["flat"], d["flat"], d["flat"], d["flat"])  # RAG gives facts: "rag"
    advice = recommend(usual, RaftEvidence(d[made_up], d[facts], d[false_handoff]))
    assert advice.choice == choice
    assert "made-up rate vs base+RAG" in advice.text and advice.text.count("Recommendation:") == 1
    assert recommend(usual).choice == "rag" and "made-up" not in recommend(usual).text


def test_serve_answers_a_raft_run_with_its_settings_and_names_cited_sources(raft_run, monkeypatch):
    from starlette.testclient import TestClient

    import tunesmith.serve.app as app_module
    from tunesmith.inference.streaming import Completion
    from tunesmith.run import load_run

    built = {}
    build_app = app_module.build_app
    monkeypatch.setattr(app_module, "build_app", lambda *args, **kwargs: built.setdefault("args", args))
    monkeypatch.setattr("uvicorn.Server.run", lambda self: None)
    app_module.serve(raft_run)  # no --knowledge: the run's own
    retriever = built["args"][6]
    saved = RunDir_config(raft_run).retrieval
    assert retriever.settings == saved.answer_settings() and retriever.settings.retriever == "bm25"

    async def answered(events):  # the model's answer, citing passage 1
        return Completion("Usually four to six weeks. [1]", 5, 5, "stop")

    monkeypatch.setattr(app_module, "_drained", answered)
    model, tokenizer = load_run(raft_run)
    app = build_app(model, tokenizer, "raft", allowed_hosts=["testserver"], retriever=retriever)
    question = "How long does a permit take?"
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={"model": "raft", "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": question}]})
    assert reply.status_code == 200, reply.text
    source = retriever.retrieve([question])[0][0].source
    assert reply.json()["choices"][0]["message"]["content"] == f"Usually four to six weeks. [{source}]"
    assert "kb.jsonl:" in source


def RunDir_config(run):
    from tunesmith.run import RunDir

    return RunDir.open(run).config()


def test_streamed_pieces_name_cited_sources_as_the_whole_answer_does():
    from tunesmith.evaluation.handoff import SourcedStream

    sources = ["faq.jsonl:1", "permits.pdf:p12"]
    answer = "Four weeks [2], see [1][3] or [12 and [x]. [2]"
    for cuts in ([5, 6, 7, 8], [20, 21, 22, 23, 24, 30], range(1, len(answer)), [len(answer) - 1]):
        stream, edges = SourcedStream(sources), [0, *cuts, len(answer)]
        joined = "".join(stream.feed(answer[a:b]) for a, b in zip(edges, edges[1:])) + stream.flush()
        assert joined == with_sources(answer, sources)
    assert joined == "Four weeks [permits.pdf:p12], see [faq.jsonl:1][3] or [12 and [x]. [permits.pdf:p12]"
    held = SourcedStream(sources)
    assert held.feed("weeks [") == "weeks " and held.feed("2") == "" and held.feed("] ok") == "[permits.pdf:p12] ok"


def served_raft_job(raft_run, tmp_path):
    """A jobs server's models over a home whose one job is the RAFT run: (served, its tuned model's id)."""
    import shutil

    from tunesmith.run import load_run
    from tunesmith.serve.app import GenerationGate
    from tunesmith.server.models import ServedJobs
    from tunesmith.settings import ServeLimits

    job_id = "ftjob-" + "a" * 24
    shutil.copytree(raft_run, tmp_path / "runs" / job_id)
    name = f"ft:base::{job_id}"

    class Store:  # the store's answers the chat and the page's retrieval read: one succeeded job
        def fine_tuned_models(self):
            return [name]

        def file(self, file_id):
            return None

        def job(self, asked):
            return {"id": job_id, "config": {"train": {"data": str(raft_run.parent / "faq.jsonl")}}} \
                if asked == job_id else None

    model, tokenizer = load_run(raft_run)
    served = ServedJobs(model, tokenizer, "base", ServeLimits(), GenerationGate(4), 2048, store=Store(), home=tmp_path)
    return served, name


def test_the_jobs_server_answers_a_raft_job_with_its_retrieval_and_streams_its_sources(raft_run, tmp_path,
                                                                                        monkeypatch):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    import tunesmith.serve.app as app_module
    from tunesmith.inference.streaming import Completion

    served, name = served_raft_job(raft_run, tmp_path)
    retriever = served.retriever_for(name)
    saved = RunDir_config(raft_run).retrieval
    assert retriever.settings == saved.answer_settings() and served.retriever_for("base") is None
    assert served.retriever_for(name) is retriever  # loaded once
    prompts = []

    async def decoded(served, parsed, prompt_ids, index):  # the model's answer in pieces, citing passage 1
        prompts.append(served.tokenizer.decode(prompt_ids))
        for piece in ("Four to six ", "weeks. [", "1", "]"):
            yield piece
        yield Completion("Four to six weeks. [1]", 5, 5, "stop")

    monkeypatch.setattr(app_module, "_decoded", decoded)
    question = "How long does a permit take?"
    source = retriever.retrieve([question])[0][0].source
    with TestClient(Starlette(routes=app_module.inference_routes(served))) as client:
        ask = {"model": name, "max_tokens": 8, "messages": [{"role": "user", "content": question}]}
        whole = client.post("/v1/chat/completions", json=ask).json()["choices"][0]["message"]["content"]
        streamed = client.post("/v1/chat/completions", json={**ask, "stream": True}).text
        plain = client.post("/v1/chat/completions", json={**ask, "retrieval": False}).json()
    assert whole == f"Four to six weeks. [{source}]"
    pieces = [json.loads(line[6:])["choices"][0]["delta"].get("content", "")
              for line in streamed.splitlines() if line.startswith("data: {")]
    assert "".join(pieces) == whole  # an OpenAI client joins the deltas: the same text as a whole answer
    assert saved.handoff in prompts[0] and saved.handoff in prompts[1]  # the run's prompt, passages and all
    assert saved.handoff not in prompts[2] and plain["choices"][0]["message"]["content"] == "Four to six weeks. [1]"


def test_the_playground_and_the_compare_page_use_a_raft_jobs_own_retrieval(raft_run, tmp_path):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from tunesmith.ui.api_tasks import compare_args, task_routes
    from tunesmith.ui.knowledge import Retrievers
    from tunesmith.ui.tasks import TaskRunner
    from tunesmith.web.errors import EXCEPTION_HANDLERS

    served, name = served_raft_job(raft_run, tmp_path)
    app = Starlette(routes=task_routes(tmp_path, served.store, TaskRunner(), Retrievers(served.model, served.tokenizer),
                                       lambda request: raft_run), exception_handlers=EXCEPTION_HANDLERS)
    app.state.served = served
    question = "How long does a permit take?"
    ask = {"max_tokens": 8, "messages": [{"role": "user", "content": question}]}
    saved = RunDir_config(raft_run).retrieval
    with TestClient(app) as client:
        own = client.post("/ui/api/retrieve", json={**ask, "model": name}).json()
        base = client.post("/ui/api/retrieve", json={**ask, "model": "base"}).json()
        job_id = name.rsplit(":", 1)[-1]
        as_raft = client.post("/ui/api/retrieve", json={**ask, "model": name, "knowledge": job_id}).json()
        unknown = client.post("/ui/api/retrieve", json={**ask, "model": "ft:nobody"})
        compare_state = client.get(f"/ui/api/jobs/{job_id}/compare").json()
    passages = served.retriever_for(name).retrieve([question])[0]  # what the server's chat puts in
    assert [p["source"] for p in own["passages"]] == own["sources"] == [p.source for p in passages]
    assert own["cite"] and 1 <= len(own["passages"]) <= saved.top_k  # bm25: those sharing a word
    assert own["messages"][-1]["content"].startswith(context_header(saved.answer_settings()))
    assert base["passages"] == [] and base["messages"] == ask["messages"]  # the base answers without passages
    assert as_raft["cite"] and as_raft["messages"][-1]["content"].startswith(context_header(saved.answer_settings()))
    assert "faq.jsonl:" in as_raft["sources"][0]  # the chosen file, searched as the RAFT job answers
    assert unknown.status_code == 404
    assert compare_state["own_knowledge"] == saved.knowledge  # the Compare page offers it, first
    assert compare_args({}, None)["knowledge"] is None  # which compare reads as the run's own


@pytest.fixture(scope="module")
def raft_compared(raft_run):
    """compare of the RAFT run on as many held-out questions as `eval` answers, and none from training."""
    from tunesmith.commands.compare import compare_run
    from tunesmith.commands.evaluate import TASK_SIZES
    from tunesmith.settings import CompareSettings

    sizes = TASK_SIZES["standard"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_CACHE_DIR", str(raft_run.parent / "cache"))
        patch.setattr("tunesmith.retrieval.Embedder.load", classmethod(lambda cls: pytest.fail("bm25 needs no model")))
        patch.setattr(compare_module, "general_texts", lambda: ["The cat sat on the mat.", "It is what it is."])
        return compare_run(raft_run, None, settings=CompareSettings(limit=sizes.generate, seen=0,
                                                                    max_new_tokens=sizes.max_new_tokens))


def test_eval_of_a_raft_run_adds_compares_splits(raft_run, raft_compared, private_caches, monkeypatch):
    from tunesmith.cli import main

    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(private_caches))  # the base's probe scores of other evals
    out = CliRunner().invoke(main, ["eval", str(raft_run)])
    assert out.exit_code == 0, out.output
    splits = json.loads((raft_run / "eval.json").read_text())["splits"]
    assert set(splits) <= {"found", "missed", "unanswerable"} and "unanswerable" in splits
    assert f"unanswerable ({splits['unanswerable']['n']}): token_f1 base+rag" in " ".join(out.output.split())
    made_up = splits["unanswerable"]["systems"]["tuned+rag"]["made_up_rate"]
    report = (raft_run / "report.html").read_text()
    row = report[report.index(f"<td>unanswerable ({splits['unanswerable']['n']})</td><td>tuned+rag</td>"):]
    assert f"<td>{made_up['value']:.3f} [" in row[:row.index("</tr>")]  # the report's table of the splits
    assert splits["unanswerable"]["n"] == raft_compared["splits"]["unseen"]["n"] >= 1  # every held-out question
    assert {k: v for k, v in raft_compared["splits"].items() if k in splits} == splits  # compare's code, its figures


def test_the_raft_demo_report_sets_the_raft_model_beside_the_four_way_table(raft_compared):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "raft-demo" / "report.py"
    spec = importlib.util.spec_from_file_location("raft_demo_report", path)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    lines = report.report_lines(raft_compared, raft_compared)  # the RAFT run's compare as the plain one too
    table = lines[2:7]
    tuned_rag = raft_compared["splits"]["unseen"]["systems"]["tuned+rag"]["token_f1"]
    assert [line.split()[0] for line in table] == ["base", "base+rag", "tuned", "tuned+rag", "raft+rag"]
    assert table[-1].split()[1] == f"{tuned_rag['value']:.3f}"
    unanswerable = next(i for i, line in enumerate(lines) if line.startswith("unanswerable ("))
    assert "made_up_rate" in lines[unanswerable + 2] and lines[unanswerable + 2].split()[0] == "raft+rag"
    sample = raft_compared["samples"][0]
    assert f"Q: {sample['question']}" in lines and f"  raft+rag:  {sample['tuned+rag']}" in lines
    assert lines[-1] == raft_compared["recommendation"]
