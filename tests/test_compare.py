"""`tunesmith compare`: metrics against hand-computed values, the recommendation rules, batched
generation, an end-to-end `compare --json` on a tiny run, and chat/serve with --knowledge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FAQ
from tunesmith.cli import main
from tunesmith.commands import compare as compare_module
from tunesmith.commands.compare import SYSTEMS, format_table, per_question_scores, summarize_system
from tunesmith.commands.generate import generate
from tunesmith.data import QA, encode_prompt
from tunesmith.data.render import end_of_turn_ids
from tunesmith.evaluation.bootstrap import bootstrap_ci
from tunesmith.evaluation.recommend import Delta, Evidence, recommend
from tunesmith.evaluation.text_metrics import answer_length, rouge_l, style_markers, style_match, token_f1
from tunesmith.inference.decode import generate_batch
from tunesmith.retrieval import RetrievalSettings, Retriever
from tunesmith.run import load_run

UP, DOWN, FLAT = Delta(0.2, 0.1, 0.3), Delta(-0.2, -0.3, -0.1), Delta(0.01, -0.05, 0.07)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))
    # Style markers are contrasted with general text; two sentences keep the test fast.
    monkeypatch.setattr(compare_module, "general_texts", lambda: ["The cat sat on the mat.", "It is what it is."])


@pytest.fixture(scope="module")
def tuned(tiny_run):
    return load_run(tiny_run)


def test_metrics_match_hand_computed_values():
    # pred tokens [cat, sat], ref [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8 (articles dropped).
    assert token_f1("The cat sat.", "A cat sat down") == pytest.approx(0.8)
    # LCS of [cat, sat, on, mat] and [cat, on, big, mat] is [cat, on, mat] = 3: P = R = 3/4.
    assert rouge_l("cat sat on mat", "cat on big mat") == pytest.approx(0.75)
    markers = style_markers(["Zaragoza AB builds it.", "Call Zaragoza today.", "Yes, we build today."],
                            ["We build houses today.", "Call me."], n=3, min_share=0.5)
    # zaragoza: (2/3) / (0/2 + 1/2) = 1.33; today: (2/3) / (1/2 + 1/2) = 0.67; the rest are in < 1/2 of answers.
    assert markers == ["zaragoza", "today"]
    assert style_match("zaragoza will do it", markers) == 1.0 and style_match("we will", markers) == 0.0
    assert answer_length("The cat, sat!") == 2


def test_system_summary_values_and_intervals():
    questions = [QA([{"role": "user", "content": "q"}], ref, "f:1") for ref in ("cat sat down", "red dog")]
    scores = per_question_scores(["cat sat", "red dog runs fast"], questions, ["dog"])
    summary = summarize_system(scores)
    assert summary["n"] == 2
    assert summary["token_f1"]["value"] == pytest.approx((0.8 + 2 * 0.5 * 1 / 1.5) / 2)
    assert summary["length_ratio"]["value"] == pytest.approx((2 + 4) / (3 + 2))  # ratio of word sums
    assert summary["style_match"]["value"] == pytest.approx(0.5)
    for metric in ("token_f1", "length_ratio", "style_match"):
        lo, hi = summary[metric]["ci95"]
        assert lo <= summary[metric]["value"] <= hi
    assert bootstrap_ci(np.full(5, 0.3), np.ones(5)) == pytest.approx((0.3, 0.3))


@pytest.mark.parametrize("evidence, choice", [
    (Evidence(UP, UP, UP, FLAT, FLAT), "both"),           # RAG for facts, tuning for form
    (Evidence(UP, FLAT, FLAT, FLAT, UP), "both"),         # tuning adds F1 on top of RAG
    (Evidence(UP, UP, UP, FLAT, DOWN), "rag"),            # tuning hurts when combined
    (Evidence(UP, FLAT, FLAT, FLAT, FLAT), "rag"),
    (Evidence(FLAT, UP, FLAT, FLAT, FLAT), "fine-tune"),
    (Evidence(FLAT, FLAT, FLAT, DOWN, FLAT), "fine-tune"),  # shorter, reference-like answers
    (Evidence(FLAT, FLAT, FLAT, FLAT, FLAT), "undecided"),
])
def test_recommendation_rules(evidence, choice):
    advice = recommend(evidence)
    assert advice.choice == choice
    assert advice.text.count("Recommendation:") == 1


def test_a_split_not_measured_is_left_out_and_fires_no_rule():
    """`compare --seen 0` has no training questions: their evidence is NaN, and the text says
    nothing of it (it printed "+nan (95% CI [+nan, +nan])")."""
    missing = Delta(math.nan, math.nan, math.nan)
    advice = recommend(Evidence(FLAT, missing, FLAT, FLAT, FLAT))
    assert "nan" not in advice.text and "facts seen in training" not in advice.text
    assert advice.choice == "undecided"
    assert not missing.gain and not missing.loss
    # An interval that touches zero is no finding either.
    assert recommend(Evidence(Delta(0.1, 0.0, 0.2), missing, Delta(0.1, 0.0, 0.2), Delta(-0.1, -0.2, 0.0),
                              Delta(0.1, 0.0, 0.2))).choice == "undecided"


def test_recommendation_text_quotes_the_numbers():
    text = recommend(Evidence(UP, FLAT, UP, FLAT, FLAT)).text
    assert text.startswith("RAG adds +0.200 (95% CI [+0.100, +0.300]) token F1 on facts only in the knowledge source.")
    assert "Recommendation: use both" in text


def test_batched_generation_matches_one_prompt_at_a_time(tuned):
    model, tokenizer = tuned
    prompts = [encode_prompt([{"role": "user", "content": q}], tokenizer)
               for q in ("Hi", "What is a building permit?", "Who decides on permits, and how long does it take?")]
    eos = sorted(end_of_turn_ids(tokenizer))
    single = [generate_batch(model, [p], 10, eos, tokenizer.pad_token_id, batch_size=1)[0] for p in prompts]
    assert generate_batch(model, prompts, 10, eos, tokenizer.pad_token_id, batch_size=3) == single
    assert generate_batch(model, prompts, 10, eos, tokenizer.pad_token_id, batch_size=2) == single


def test_compare_json_end_to_end(tiny_run, embedder, monkeypatch):
    # The CLI builds its own embedder: reuse the session's (loading it is the slow part).
    monkeypatch.setattr("tunesmith.retrieval.Embedder.load", classmethod(lambda cls: embedder))
    knowledge = tiny_run.parent / f"{tiny_run.name}-faq.jsonl"  # the training file: its answers are the passages
    out = CliRunner().invoke(main, ["compare", "--run", str(tiny_run), "--knowledge", str(knowledge), "--json",
                                    "--limit", "5", "--seen", "3", "--max-new-tokens", "6"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result == json.loads((tiny_run / "compare.json").read_text())
    assert set(result["systems"]) == set(SYSTEMS)
    assert result["splits"]["unseen"]["n"] == 1 and result["splits"]["seen"]["n"] == 3  # 10 rows: 1 held out
    for split in result["splits"].values():
        for system in split["systems"].values():
            for metric in ("token_f1", "rouge_l", "exact_match", "length_ratio", "style_match"):
                lo, hi = system[metric]["ci95"]
                assert lo - 1e-9 <= system[metric]["value"] <= hi + 1e-9
    assert result["choice"] in ("both", "rag", "fine-tune", "undecided")
    assert "Recommendation:" in result["recommendation"]
    assert result["retrieval"]["passages"] == 10 and result["retrieval"]["answer_found_rate"] >= 0.5
    # The held-out question's own answer is among the 10 passages: the retriever must rank it in the top 5.
    retrieval = result["retrieval"]
    assert retrieval["retriever"] == RetrievalSettings.retriever and retrieval["recall_questions"] == 1
    assert set(retrieval["recall_at_k"]) == {"1", "3", "5"} and retrieval["recall_at_k"]["5"] == 1.0
    sample = result["samples"][0]
    assert set(SYSTEMS) <= set(sample) and sample["tuned"] != sample["base"]
    table = format_table(result["systems"])
    assert len(table) == 5 and table[1].startswith("base ") and "[" in table[1]
    printed = CliRunner().invoke(main, ["compare", "--run", str(tiny_run), "--knowledge", str(knowledge),
                                        "--limit", "2", "--seen", "0", "--max-new-tokens", "4"])
    assert printed.exit_code == 0, printed.output
    assert "tuned+rag" in printed.stdout and "Recommendation:" in printed.stdout
    assert "training questions" not in printed.stdout  # --seen 0: no split of facts seen in training
    assert not result["base_cached"]
    again = CliRunner().invoke(main, ["compare", "--run", str(tiny_run), "--knowledge", str(knowledge), "--json",
                                      "--limit", "5", "--seen", "3", "--max-new-tokens", "6"])
    second = json.loads(again.stdout)  # the base's answers from the cache: the same figures
    assert second["base_cached"] and second["samples"] == result["samples"] and second["splits"] == result["splits"]
    fresh = CliRunner().invoke(main, ["compare", "--run", str(tiny_run), "--knowledge", str(knowledge), "--json",
                                      "--limit", "5", "--seen", "3", "--max-new-tokens", "6", "--no-cache"])
    assert not json.loads(fresh.stdout)["base_cached"]


def test_compare_names_a_missing_knowledge_source(tiny_run, tmp_path):
    out = CliRunner().invoke(main, ["compare", "--run", str(tiny_run), "--knowledge", str(tmp_path / "nope")])
    assert out.exit_code == 1 and "nope" in out.output and "does not exist" in out.output


@pytest.fixture
def retriever(tiny_run, embedder):
    return Retriever.load(tiny_run.parent / f"{tiny_run.name}-faq.jsonl", RetrievalSettings(top_k=2), embedder=embedder)


def test_chat_with_knowledge_puts_passages_in_the_prompt_only(tuned, retriever):
    from tunesmith.commands.chat import chat_loop
    from tunesmith.inference.streaming import Sampling

    model, tokenizer = tuned
    lines = iter(["How long does a permit take?", "/exit"])
    out: list[str] = []
    augment = lambda messages: retriever.augment(messages, tokenizer, 400)  # noqa: E731
    session = chat_loop(model, tokenizer, Sampling(max_new_tokens=8), lambda p: next(lines), out.append,
                        augment=augment)
    question = [{"role": "user", "content": "How long does a permit take?"}]
    augmented = augment(question)
    assert "Usually four to six weeks." in augmented[-1]["content"]
    assert session.turns[0] == question[0]  # the history keeps the user's words, not the passages
    assert session.turns[1]["content"] == generate(model, tokenizer, augmented, max_new_tokens=8)


def test_serve_with_knowledge_answers_from_retrieved_passages(tuned, retriever):
    from starlette.testclient import TestClient

    from tunesmith.serve.app import build_app

    model, tokenizer = tuned
    app = build_app(model, tokenizer, "tiny", allowed_hosts=["testserver"], retriever=retriever)
    messages = [{"role": "user", "content": "Who decides on permits?"}]
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 8})
    assert reply.status_code == 200, reply.text
    room = min(512 - 8, RetrievalSettings.max_prompt_tokens)
    augmented = retriever.augment(messages, tokenizer, room)
    assert "The municipality's building committee." in augmented[-1]["content"]
    assert reply.json()["choices"][0]["message"]["content"] == generate(model, tokenizer, augmented, max_new_tokens=8)


def test_cli_chat_and_compare_take_a_folder_of_pdfs_and_a_retriever(tiny_run, tmp_path, monkeypatch):
    from fpdf import FPDF

    monkeypatch.setattr("tunesmith.retrieval.Embedder.load",
                        classmethod(lambda cls: pytest.fail("bm25 needs no model")))
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for _, answer in FAQ:
        pdf.add_page()
        pdf.multi_cell(0, 10, answer)
    (tmp_path / "kb").mkdir()
    pdf.output(str(tmp_path / "kb" / "faq.pdf"))
    (tmp_path / "kb" / "broken.pdf").write_bytes(b"%PDF-1.4 cut short")
    args = ["--knowledge", str(tmp_path / "kb"), "--retriever", "bm25", "--max-new-tokens", "4"]
    refused = CliRunner().invoke(main, ["chat", str(tiny_run), *args], input="/exit\n")
    assert refused.exit_code == 1 and "broken.pdf" in refused.output and "is not a whole PDF" in refused.output
    args += ["--unreadable-documents", "skip"]
    out = CliRunner().invoke(main, ["chat", str(tiny_run), *args], input="Who decides on permits?\n/exit\n")
    assert out.exit_code == 0, out.output
    assert "skipped" in out.output and "broken.pdf" in out.output and "bot> " in out.output
    out = CliRunner().invoke(main, ["compare", "--run", str(tiny_run), *args, "--limit", "2", "--seen", "0", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["retrieval"]["retriever"] == "bm25" and result["retrieval"]["passages"] == len(FAQ)


def test_cli_chat_with_knowledge(tiny_run, embedder, monkeypatch):
    monkeypatch.setattr("tunesmith.retrieval.Embedder.load", classmethod(lambda cls: embedder))
    knowledge = tiny_run.parent / f"{tiny_run.name}-faq.jsonl"
    out = CliRunner().invoke(main, ["chat", str(tiny_run), "--knowledge", str(knowledge), "--max-new-tokens", "4"],
                             input="Who decides on permits?\n/exit\n")
    assert out.exit_code == 0, out.output
    assert "bot> " in out.output
