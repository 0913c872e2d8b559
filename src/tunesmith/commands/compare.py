"""`tunesmith compare`: base, base+RAG, tuned and tuned+RAG answer the same questions, scored on
content (token F1, ROUGE-L, exact match) and form (length ratio, style match) with 95% bootstrap
intervals, split into held-out questions (facts only in the knowledge source) and training
questions (facts seen in training); writes RUN/compare.json with a rule-based recommendation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from rich.markup import escape

from ..config import ConfigError, TrainConfig
from ..data import (
    QA,
    DataError,
    DataIssue,
    answered_questions,
    data_options,
    encode_prompt,
    held_out_questions,
    prepare_data,
    read_records,
)
from ..data.render import end_of_turn_ids, pad_id
from ..evaluation.bootstrap import bootstrap_ci, paired_summary
from ..evaluation.handoff import add_rates, citation_correct, handoff_flags
from ..evaluation.recommend import Delta, Evidence, RaftEvidence, recommend
from ..evaluation.text_metrics import answer_length, exact_match, rouge_l, style_markers, style_match, token_f1
from ..forgetting.probes import general_texts
from ..inference.decode import adapters_merged, generate_batch
from ..inference.engines import DEFAULT_ENGINE, open_engine
from ..model.base import cached_base
from ..retrieval import Passage, Retriever, recall_at_k
from ..retrieval.raft import run_retrieval
from ..retrieval.recall import ANSWER_F1
from ..run import COMPARE, RunDir, load_run_and_base
from ..settings import CompareSettings, RetrievalSettings

SYSTEMS = ("base", "base+rag", "tuned", "tuned+rag")
METRICS = ("token_f1", "rouge_l", "exact_match", "length_ratio", "style_match")
SPLITS = {
    "unseen": "held-out questions: their facts are only in the knowledge source",
    "seen": "training questions: their facts were in the training data",
    "all": "both together",
    "found": "held-out questions whose retrieved passages held the answer (runs trained with retrieval)",
    "missed": "held-out questions whose retrieved passages did not hold the answer",
    "unanswerable": "the held-out questions again, every passage holding their answer left out of the ranking",
}
# Paired differences the recommendation reads: name -> (from system, to system).
COMPARISONS = {"rag_on_base": ("base", "base+rag"), "rag_on_tuned": ("tuned", "tuned+rag"),
               "tuning": ("base", "tuned"), "tuning_with_rag": ("base+rag", "tuned+rag")}
SAMPLES_SHOWN = 3
"""Questions quoted in compare.json with all four answers."""


def question_splits(config: TrainConfig, tokenizer: Any, eval_data: str | None) -> tuple[list[QA], list[QA]]:
    """(held-out, training) questions: held-out from `eval_data` when given, else the run's own
    validation split (recomputed from its config with its seed, exactly as training split it)."""
    options = data_options(config)  # read as training read them: the same columns and system prompt
    data = prepare_data(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed,
                        **options, train_fraction=config.train_fraction)
    train_sources = {e.source for e in data.train}
    seen = [q for q in answered_questions(read_records(config.data, **options)) if q.source in train_sources]
    if eval_data is not None:
        unseen = answered_questions(read_records(eval_data, **options))
    else:
        unseen = held_out_questions(config, {e.source for e in data.val})
    return unseen, seen


def sample(questions: list[QA], n: int, seed: int) -> list[QA]:
    chosen = list(questions)
    random.Random(seed).shuffle(chosen)
    return chosen[:n]


def per_question_scores(answers: Sequence[str], questions: Sequence[QA], markers: list[str]) -> dict[str, np.ndarray]:
    """(n,) arrays per question: each metric's value, plus the answer and reference lengths."""
    refs = [q.reference for q in questions]
    pred_len = np.array([answer_length(a) for a in answers], float)
    ref_len = np.array([answer_length(r) for r in refs], float)
    return {
        "token_f1": np.array([token_f1(a, r) for a, r in zip(answers, refs)]),
        "rouge_l": np.array([rouge_l(a, r) for a, r in zip(answers, refs)]),
        "exact_match": np.array([exact_match(a, r) for a, r in zip(answers, refs)]),
        "style_match": np.array([style_match(a, markers) for a in answers]),
        "answer_words": pred_len,
        "reference_words": ref_len,
        # |log ratio| of lengths (+1 words so an empty answer is finite): 0 is the reference's length.
        "length_error": np.abs(np.log((pred_len + 1) / (ref_len + 1))),
    }


def summarize_system(scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """{metric: {"value", "ci95"}} of one system on one split. The length ratio is total answer
    words / total reference words (resampled as a ratio of sums); the others are means."""
    n = len(scores["token_f1"])
    out: dict[str, Any] = {"n": n}
    for name in METRICS + ("length_error",):
        values, weights = (scores["answer_words"], scores["reference_words"]) if name == "length_ratio" \
            else (scores[name], np.ones(n))
        value = float(values.sum() / max(weights.sum(), 1e-12)) if n else math.nan
        out[name] = {"value": value, "ci95": list(bootstrap_ci(values, weights))}
    return out


def summarize_split(scores: dict[str, dict[str, np.ndarray]], keep: np.ndarray) -> dict[str, Any]:
    """Every system's summary and the paired differences of COMPARISONS on the questions in `keep`."""
    part = {s: {k: v[keep] for k, v in scores[s].items()} for s in SYSTEMS}
    ones = np.ones(int(keep.sum()))
    deltas = {}
    for name, (a, b) in COMPARISONS.items():
        deltas[name] = {}
        for metric in ("token_f1", "rouge_l", "style_match", "length_error"):
            paired = paired_summary(part[a][metric], part[b][metric], ones)
            deltas[name][metric] = {"delta": paired["delta"], "ci95": paired["ci95"]}
    return {"n": int(keep.sum()), "systems": {s: summarize_system(part[s]) for s in SYSTEMS}, "deltas": deltas}


def evidence(splits: dict[str, Any]) -> Evidence:
    """The differences the recommendation rules read (recommend.py)."""
    def delta(split: str, name: str, metric: str) -> Delta:
        d = splits[split]["deltas"][name][metric] if split in splits else {"delta": math.nan, "ci95": [math.nan] * 2}
        return Delta(d["delta"], *d["ci95"])

    return Evidence(rag_facts=delta("unseen", "rag_on_base", "token_f1"),
                    tuning_seen_facts=delta("seen", "tuning", "token_f1"),
                    tuning_style=delta("all", "tuning", "style_match"),
                    tuning_length_error=delta("all", "tuning", "length_error"),
                    tuning_with_rag=delta("unseen", "tuning_with_rag", "token_f1"))


def raft_evidence(splits: dict[str, Any]) -> RaftEvidence | None:
    """What rules R5-R6 read (recommend.py), tuned+RAG against base+RAG; None without the RAFT splits."""
    def delta(split: str, metric: str) -> Delta:
        d = splits[split]["deltas"]["tuning_with_rag"][metric] if split in splits else {"delta": math.nan,
                                                                                          "ci95": [math.nan] * 2}
        return Delta(d["delta"], *d["ci95"])

    if "unanswerable" not in splits:
        return None
    return RaftEvidence(delta("unanswerable", "made_up_rate"), delta("found", "token_f1"),
                        delta("found", "false_handoff_rate"))


def retrieval_summary(retrieval: RetrievalSettings, ranked: Sequence[Sequence[Passage]], questions: Sequence[QA],
                      n_unseen: int, recall_ks: Sequence[int]) -> dict[str, Any]:
    """What compare.json says of the retriever: which one, its relevance floor (`min_relevance`, None
    without one), its recall@k on the held-out questions (the first `n_unseen`) and the share of all
    questions with the answer among the top_k passages that go into the prompt. A passage holds the
    answer when its token F1 with the reference is at least ANSWER_F1, the rule that works on any
    knowledge source (whose passages are not the references)."""
    holds = [[token_f1(p.text, q.reference) >= ANSWER_F1 for p in row] for q, row in zip(questions, ranked)]
    recall = recall_at_k(holds[:n_unseen], recall_ks)
    return {"retriever": retrieval.retriever, "top_k": retrieval.top_k, "min_relevance": retrieval.min_relevance,
            "recall_at_k": {str(k): v for k, v in recall.items()}, "recall_questions": n_unseen,
            "answer_found_rate": float(np.mean([any(row[: retrieval.top_k]) for row in holds]))}


def raft_splits(scores: dict[str, dict[str, np.ndarray]], answers: dict[str, list[str]], unseen: Sequence[QA],
                holds: Sequence[Sequence[bool]], markers: list[str], retrieval: RetrievalSettings) -> dict[str, Any]:
    """The splits of a run trained with retrieval (RAFT): found and missed (held-out questions whose
    passages did or did not hold the answer) and unanswerable (`answers["... unanswerable"]`: the +rag
    systems with no passage holding the answer; the others answer without passages, as in unseen), each
    with hand-off rates (evaluation/handoff.py) and, on found, citation accuracy."""
    handoff = retrieval.handoff or ""
    n = len(unseen)
    found = np.array([any(row[: retrieval.top_k]) for row in holds[:n]])
    unans_scores = {s: ({k: v[:n] for k, v in scores[s].items()} if "rag" not in s
                        else per_question_scores(answers[f"{s} unanswerable"], unseen, markers)) for s in SYSTEMS}
    unans_answers = {s: answers[s][:n] if "rag" not in s else answers[f"{s} unanswerable"] for s in SYSTEMS}
    out = {}
    for name, part, said, keep in (("found", scores, answers, found), ("missed", scores, answers, ~found),
                                   ("unanswerable", unans_scores, unans_answers, np.ones(n, bool))):
        keep = np.concatenate([keep, np.zeros(len(part["base"]["token_f1"]) - n, bool)])
        if not keep.any():
            continue
        kept = np.flatnonzero(keep)
        flags = {s: handoff_flags([said[s][i] for i in kept], handoff) for s in SYSTEMS}
        cited = {s: np.array([citation_correct(said[s][i], holds[i][: retrieval.top_k]) for i in kept])
                 for s in ("base+rag", "tuned+rag")} if name == "found" and retrieval.cite else None
        split = {"description": SPLITS[name], **summarize_split(part, keep)}
        out[name] = add_rates(split, name, flags, COMPARISONS, cited)
    return out


def prompt_passages(ranked: Sequence[Sequence[Passage]], holds: Sequence[Sequence[bool]], top: int,
                    n_unanswerable: int) -> list[list[Passage]]:
    """The +rag systems' passages: each question's top `top`, then for the first `n_unanswerable` the
    top of those that do not hold its answer (before the relevance floor, which the prompt builder applies)."""
    return [list(row[:top]) for row in ranked] + [[p for p, x in zip(row, held) if not x][:top] for row, held
                                                  in zip(ranked[:n_unanswerable], holds[:n_unanswerable])]


def rag_prompts(retriever: Retriever, questions: Sequence[QA], ranked: Sequence[Sequence[Passage]], tokenizer: Any,
                budget: int, n_unanswerable: int) -> tuple[list[list[bool]], list[list[int]]]:
    """Whether each ranked passage holds its question's answer, and the +rag systems' prompts: each
    question's top_k passages, then for the first `n_unanswerable` (held-out) questions the top_k of
    those that do not hold it (the unanswerable split of a run trained with retrieval)."""
    holds = [[token_f1(p.text, q.reference) >= ANSWER_F1 for p in row] for q, row in zip(questions, ranked)]
    chosen = prompt_passages(ranked, holds, retriever.settings.top_k, n_unanswerable)
    questions = list(questions) + list(questions[:n_unanswerable])
    return holds, [encode_prompt(retriever.augment_with(q.messages, passages, tokenizer, budget), tokenizer)
                   for q, passages in zip(questions, chosen)]


def decoded_answers(base_out: Sequence[list[int]], tuned_out: Sequence[list[int]], n: int, tokenizer: Any
                    ) -> dict[str, list[str]]:
    """Each system's answers as text from the decoded ids (plain prompts, then +rag, then unanswerable)."""
    named = {"base": base_out[:n], "base+rag": base_out[n:2 * n], "tuned": tuned_out[:n],
             "tuned+rag": tuned_out[n:2 * n], "base+rag unanswerable": base_out[2 * n:],
             "tuned+rag unanswerable": tuned_out[2 * n:]}
    return {s: [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out] for s, out in named.items()}


def answers_fingerprint(prompts: Sequence[list[int]], settings: CompareSettings, model: Any) -> str:
    """Names the base model's answers in the cache: the prompts' tokens (retrieved passages included),
    the answer length and the dtype the model computes in."""
    payload = json.dumps([list(map(int, p)) for p in prompts] + [settings.max_new_tokens,
                                                                  str(next(model.parameters()).dtype)])
    return "compare-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def _base_answers(view: Callable, generate: Callable[[Any], list[list[int]]]) -> dict[str, Any]:
    with view() as base:
        return {"answers": generate(base)}


def run_settings(config: TrainConfig, knowledge: str | Path | None,
                 settings: CompareSettings) -> tuple[str | Path, CompareSettings]:
    """The knowledge source and settings a run is compared with: a run trained with `retrieval:`
    answers as it was trained (`run_retrieval`: its knowledge by default, its prompt), others as given."""
    knowledge, retrieval = run_retrieval(config, knowledge, settings.retrieval)
    if knowledge is None:
        raise ConfigError("compare needs --knowledge: the knowledge source (the run was not trained with retrieval:)")
    return knowledge, dataclasses.replace(settings, retrieval=retrieval)


@dataclass(frozen=True)
class Answered:
    """The four systems' answers to a run's questions, scored and split (`answer_four_ways`)."""

    questions: list[QA]
    """The held-out questions, then the training ones."""
    answers: dict[str, list[str]]
    """Per system, its answers in the order of `questions` (and the +rag systems' `... unanswerable`)."""
    splits: dict[str, Any]
    """compare.json's `splits`: unseen, seen, all, and for a RAFT run found, missed, unanswerable."""
    retriever: Retriever
    ranked: list[list[Passage]]
    """Per question, the passages retrieved, best first."""
    budget: int
    """Tokens a prompt may take."""
    seconds: dict[str, float]
    """Generation time of the base model (both its systems) and of the tuned one."""
    base_cached: bool


def answer_four_ways(run_path: Path, model: Any, tokenizer: Any, view: Callable, config: TrainConfig,
                     knowledge: str | Path, settings: CompareSettings, unseen: list[QA], seen: list[QA],
                     markers: list[str], log: Callable[[str], None], use_cache: bool = True,
                     engine: str = DEFAULT_ENGINE) -> Answered:
    """Base, base+RAG, tuned and tuned+RAG answer `unseen` and `seen`, scored per split with paired
    intervals; a run trained with `retrieval:` also answers `unseen` with no passage holding the answer
    (the unanswerable split). `compare` and `eval` of a RAFT run both measure through this."""
    raft = config.retrieval is not None
    questions = unseen + seen
    retriever = Retriever.load(knowledge, settings.retrieval, log)
    budget = retriever.prompt_budget(model, settings.max_new_tokens)
    top = retriever.settings.top_k
    ranked = retriever.retrieve([q.messages[-1]["content"] for q in questions],  # the prompts take top_k;
                                max(top, *settings.recall_ks) + (top if raft else 0))  # unanswerable, those after
    plain = [encode_prompt(q.messages, tokenizer) for q in questions]
    holds, rag = rag_prompts(retriever, questions, ranked, tokenizer, budget, len(unseen) if raft else 0)
    eos = sorted(end_of_turn_ids(tokenizer))
    pad = pad_id(tokenizer)
    generate = lambda m: generate_batch(m, plain + rag, settings.max_new_tokens, eos, pad, settings.batch_size)  # noqa: E731
    log(f"compare: {len(questions)} questions x 4 systems ({len(unseen)} held-out, {len(seen)} from training)")
    timer = time.perf_counter()
    base, cached = cached_base(config.model, tokenizer, answers_fingerprint(plain + rag, settings, model),
                               lambda: _base_answers(view, generate), use_cache)
    seconds = {"base": time.perf_counter() - timer}
    log(f"compare: base and base+rag answered in {seconds['base']:.0f} s" + (" (from the cache)" if cached else ""))
    timer = time.perf_counter()
    if engine == DEFAULT_ENGINE:
        with adapters_merged(model) as decoding:
            tuned_out = generate(decoding)
    else:
        tuned_out = open_engine(engine, run_path, eos, log=log).generate(plain + rag, settings.max_new_tokens)
    seconds["tuned"] = time.perf_counter() - timer
    answers = decoded_answers(base["answers"], tuned_out, len(questions), tokenizer)
    scores = {s: per_question_scores(answers[s], questions, markers) for s in SYSTEMS}
    in_unseen = np.arange(len(questions)) < len(unseen)
    masks = {"unseen": in_unseen, "seen": ~in_unseen, "all": np.ones(len(questions), bool)}
    splits = {name: {"description": SPLITS[name], **summarize_split(scores, keep)}
              for name, keep in masks.items() if keep.any()}
    if raft:
        splits.update(raft_splits(scores, answers, unseen, holds, markers, settings.retrieval))
    return Answered(questions, answers, splits, retriever, ranked, budget, seconds, cached)


def compare_run(run_path: str | Path, knowledge: str | Path | None, eval_data: str | None = None,
                settings: CompareSettings = CompareSettings(), log: Callable[[str], None] | None = None,
                use_cache: bool = True, engine: str = DEFAULT_ENGINE) -> dict[str, Any]:
    """Answer held-out and training questions with the four systems; score, recommend, write
    RUN/compare.json and return its content. The base model's answers come from the cache when an
    earlier compare asked it the same prompts (`cached_base`; use_cache=False recomputes them).
    Another `engine` than transformers answers for the tuned model (the base stays transformers')."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    run = RunDir.open(run_path)
    config = run.config()
    model, tokenizer, _, view = load_run_and_base(run.path)
    knowledge, settings = run_settings(config, knowledge, settings)
    unseen, seen = question_splits(config, tokenizer, eval_data)
    if not unseen:
        raise DataError([DataIssue(str(eval_data or config.eval or config.data), 0, "(file)",
                                   "has no held-out questions with answers: "
                                   "pass --eval FILE with question/answer rows")])
    markers = style_markers([q.reference for q in seen], general_texts())
    unseen, seen = sample(unseen, settings.limit, config.seed), sample(seen, settings.seen, config.seed)
    done = answer_four_ways(run.path, model, tokenizer, view, config, knowledge, settings, unseen, seen, markers, log,
                            use_cache, engine)
    splits, answers, retriever = done.splits, done.answers, done.retriever
    advice = recommend(evidence(splits), raft_evidence(splits))
    result = {
        "run": str(run.path),
        "model": config.model,
        "method": config.method,
        "knowledge": str(knowledge),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "systems": splits["unseen"]["systems"],
        "splits": splits,
        "recommendation": advice.text,
        "choice": advice.choice,
        "retrieval": {**retrieval_summary(retriever.settings, done.ranked, done.questions, len(unseen),
                                          settings.recall_ks),
                      "passages": len(retriever.passages), "prompt_budget_tokens": done.budget},
        "style_markers": markers,
        "settings": {"limit": settings.limit, "seen": settings.seen, "max_new_tokens": settings.max_new_tokens},
        "samples": [{"question": q.messages[-1]["content"], "reference": q.reference,
                     **{s: answers[s][i] for s in SYSTEMS}} for i, q in enumerate(done.questions[:SAMPLES_SHOWN])],
        "generation_seconds": done.seconds,
        "base_cached": done.base_cached,
        "engine": engine,
        "seconds": time.perf_counter() - started,
    }
    run.write_compare(result)
    return result


RAFT_SPLITS = ("found", "missed", "unanswerable")
"""The splits of a run trained with retrieval: what `eval` of such a run adds to eval.json."""


def raft_eval_splits(run_path: Path, model: Any, tokenizer: Any, view: Callable, config: TrainConfig, questions: int,
                     max_new_tokens: int, log: Callable[[str], None], use_cache: bool = True) -> dict[str, Any]:
    """`eval` of a RAFT run: compare's found / missed / unanswerable splits (`answer_four_ways`) on
    `questions` held-out questions, the sample compare takes with `--limit` as many, answered with the
    run's own knowledge source and retrieval settings."""
    knowledge, settings = run_settings(config, None, CompareSettings(limit=questions, seen=0,
                                                                     max_new_tokens=max_new_tokens))
    unseen, seen = question_splits(config, tokenizer, None)
    markers = style_markers([q.reference for q in seen], general_texts())
    done = answer_four_ways(run_path, model, tokenizer, view, config, knowledge, settings,
                            sample(unseen, settings.limit, config.seed), [], markers, log, use_cache)
    return {name: split for name, split in done.splits.items() if name in RAFT_SPLITS}


def format_table(systems: dict[str, Any]) -> list[str]:
    """One line per system: each metric's value and 95% interval."""
    head = f"{'system':<10}" + "".join(f"{m:>22}" for m in METRICS)
    lines = [head]
    for name in SYSTEMS:
        cells = []
        for metric in METRICS:
            score = systems[name][metric]
            lo, hi = score["ci95"]
            cells.append(f"{score['value']:.2f} [{lo:.2f}, {hi:.2f}]".rjust(22))
        lines.append(f"{name:<10}" + "".join(cells))
    return lines


def result_lines(result: dict[str, Any], run: str | Path) -> list[str]:
    """The comparison for the terminal (rich markup): a table per split of questions, the recommendation,
    where compare.json is."""
    lines = []
    for name, split in result["splits"].items():
        if name != "all":
            lines += ["", f"[bold]{split['n']} {escape(split['description'])}[/] (value [95% CI])",
                      *("  " + escape(line) for line in format_table(split["systems"]))]
    return [*lines, "", escape(result["recommendation"]), f"  report            {Path(run) / COMPARE}"]
