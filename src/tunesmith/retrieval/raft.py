"""RAFT training rows (`retrieval:` in a run's config): every training question's prompt carries the
passages the deployed retriever returns, put in by `Retriever.augment_with` — the prompt builder of
compare, chat and serve — with the gold passage in a share of them and the hand-off trained where
it is removed.

Which passage is gold needs no labels: the knowledge passage with the highest token F1 against
the row's answer, when at least ANSWER_F1 (the rule of compare's recall@k). A row's role is drawn
once per data set from the run's seed, and its passages' order from the seed and the row's source,
so a resume or a rerun trains on the same prompts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ..data import QA, answered_questions, read_records
from ..data.render import encode_text
from ..evaluation.text_metrics import answer_tokens
from ..settings import MIN_RELEVANCE_MISS, RetrievalSettings, RetrievalTrainConfig
from .chunking import Passage
from .context import Retriever
from .recall import ANSWER_F1, answer_f1s

Role = Literal["gold", "handoff", "distractors", "no_gold"]
ROLES: tuple[Role, ...] = ("gold", "handoff", "distractors", "no_gold")
"""gold: the gold passage among the k, the row's answer (citing it); handoff: no passage holds the
answer, the hand-off is trained; distractors: no passage holds it, the row's answer kept (RAFT's
memorised share); no_gold: no passage of the whole knowledge source holds the answer, so the row
keeps its answer and the retrieved passages, outside the shares."""
ANSWER_TEMPLATE_TOKENS = 12
"""Tokens kept free beside the answer's own when the prompt's passages are fitted to max_seq_tokens:
what the chat template adds around it (ChatML: `<|im_start|>assistant\\n`, `<|im_end|>\\n`) and the
citation ` [2]` (up to 4 tokens)."""


@dataclass(frozen=True)
class RaftExample:
    """One question as RAFT trains it."""

    source: str
    """file:line of the row in the user's data."""
    role: Role
    passages: tuple[Passage, ...]
    """The passages chosen for its prompt, in prompt order ([1] first); the prompt may cut the last."""
    messages: list[dict[str, str]]
    """The prompt turns, passages in the last user turn, then the trained answer."""


@dataclass(frozen=True)
class RaftSummary:
    """What a RAFT data set holds: the shares it was built with and how many rows took each role."""

    gold_share: float
    handoff_share: float
    measured_recall: float
    """The retriever's recall@top_k on these questions (rows with a gold passage): gold_share's default."""
    roles: dict[str, int]
    min_relevance: float
    """The relevance floor the prompts were built with (0: none), measured when the config left it None."""
    without_passages: int
    """Rows whose prompt has no passage (the floor's, hand-off rows included), trained to hand off."""


def gold_index(reference: str, knowledge: Sequence[Counter]) -> int | None:
    """The knowledge passage (given as its normalised token counts) with the highest token F1 against
    `reference`, or None when none reaches ANSWER_F1."""
    scores = answer_f1s(reference, knowledge)
    best = max(range(len(scores)), key=scores.__getitem__, default=None)
    return best if best is not None and scores[best] >= ANSWER_F1 else None


def assign_roles(n: int, gold_share: float, handoff_share: float, seed: int) -> list[Role]:
    """Roles of n rows with a gold passage: exactly round(gold_share n) gold and round(handoff_share n)
    hand-offs, the rest distractors, placed by a seeded permutation."""
    n_gold = round(gold_share * n)
    n_handoff = min(n - n_gold, round(handoff_share * n))
    order = list(range(n))
    random.Random(f"raft-roles:{seed}").shuffle(order)
    roles: list[Role] = ["distractors"] * n
    for rank, i in enumerate(order):
        roles[i] = "gold" if rank < n_gold else "handoff" if rank < n_gold + n_handoff else "distractors"
    return roles


def choose_passages(role: Role, retrieved: Sequence[Passage], holds: Sequence[bool], gold: Passage | None,
                    k: int, rng: random.Random, floor: bool = False) -> list[Passage]:
    """The k passages of a row's prompt. gold (and no_gold): the retrieved top k, as compare puts them
    into its prompt — with the gold passage put in at a seeded place for the last one when none of
    the k holds the answer. handoff and distractors: the best retrieved passages that do not hold the
    answer (mined distractors); with a relevance `floor`, a hand-off row has none, as the deployed
    retriever gives where no passage is relevant."""
    if role == "handoff" and floor:
        return []
    if role in ("gold", "no_gold"):
        chosen = list(retrieved[:k])
        if role == "gold" and gold is not None and not any(holds[:k]):
            chosen = chosen[: k - 1]
            chosen.insert(rng.randint(0, len(chosen)), gold)
        return chosen
    return [p for p, h in zip(retrieved, holds) if not h][:k]


def with_citation(answer: str, number: int) -> str:
    """The answer ending with the number of the passage it came from: `... in four weeks. [2]`."""
    return f"{answer.rstrip()} [{number}]"


def raft_examples(questions: Sequence[QA], retriever: Retriever, config: RetrievalTrainConfig, tokenizer: Any,
                  max_seq_tokens: int, seed: int) -> tuple[list[RaftExample], RaftSummary]:
    """Every question with its passages and trained answer, and the shares used (gold_share from the
    retriever's measured recall@top_k when the config leaves it None)."""
    k = config.top_k
    counts = [Counter(answer_tokens(p.text)) for p in retriever.passages]
    golds = [gold_index(q.reference, counts) for q in questions]
    # 2k candidates: the passages holding the answer are taken out of hand-off and distractor prompts.
    ranked = retriever.retrieve([q.messages[-1]["content"] for q in questions], 2 * k)
    holds = [[f >= ANSWER_F1 for f in answer_f1s(q.reference, [p.text for p in row])]
             for q, row in zip(questions, ranked)]
    with_gold = [i for i, g in enumerate(golds) if g is not None]
    recall = sum(any(holds[i][:k]) for i in with_gold) / len(with_gold) if with_gold else 0.0
    floor = config.min_relevance
    if floor != 0:  # every question and candidate embedded once, in batches, for the floor
        retriever.embed([q.messages[-1]["content"] for q in questions] + [p.text for row in ranked for p in row])
    if floor is None:  # measured: the best passage of MIN_RELEVANCE_MISS of the found questions is under it
        best = [max(retriever.relevance(questions[i].messages[-1]["content"], ranked[i][:k])) for i in with_gold
                if any(holds[i][:k])]
        floor = round(float(np.quantile(best, MIN_RELEVANCE_MISS)), 4) if best else 0.0
    retriever = dataclasses.replace(retriever, settings=dataclasses.replace(retriever.settings, min_relevance=floor))
    gold_share = recall if config.gold_share is None else config.gold_share
    handoff_share = 1.0 - gold_share if config.handoff_share is None else min(config.handoff_share, 1.0 - gold_share)
    roles: list[Role] = ["no_gold"] * len(questions)
    for i, role in zip(with_gold, assign_roles(len(with_gold), gold_share, handoff_share, seed)):
        roles[i] = role
    examples = []
    for q, role, row, held, g in zip(questions, roles, ranked, holds, golds):
        rng = random.Random(f"raft:{seed}:{q.source}")
        gold = retriever.passages[g] if g is not None else None
        passages = retriever.relevant(q.messages[-1]["content"], choose_passages(role, row, held, gold, k, rng,
                                                                                 bool(floor)))
        answer = config.handoff if role == "handoff" or (floor and not passages) else q.reference
        budget = max_seq_tokens - len(encode_text(tokenizer, answer)) - ANSWER_TEMPLATE_TOKENS
        prompt = retriever.augment_with(q.messages, passages, tokenizer, budget)
        if role == "gold" and config.cite and passages:
            answer = with_citation(answer, 1 + max(range(len(passages)), key=answer_f1s(q.reference, [
                p.text for p in passages]).__getitem__))
        examples.append(RaftExample(q.source, role, tuple(passages),
                                    prompt + [{"role": "assistant", "content": answer}]))
    summary = RaftSummary(gold_share, handoff_share, recall, {r: roles.count(r) for r in ROLES}, floor,
                          sum(not e.passages for e in examples))
    return examples, summary


def raft_data_file(data: str, examples: Sequence[RaftExample], key: str, folder: Path) -> Path:
    """The examples as a chat JSONL file, one row per row of `data` in its order (so the seeded split
    holds out the same rows as without retrieval), named by what built it."""
    from ..files import write_atomic

    path = folder / f"{Path(data).stem}-raft-{key}.jsonl"
    write_atomic(path, "".join(json.dumps({"messages": e.messages}, ensure_ascii=False) + "\n" for e in examples))
    return path


@dataclass(frozen=True)
class RaftData:
    """What `train` trains on with `retrieval:`: the RAFT files in place of the user's, and the shares."""

    data: str
    eval: str | None
    retrieval: RetrievalTrainConfig
    """The run's section with gold_share and handoff_share filled in, for its config.yaml."""
    summary: RaftSummary


def prepare_raft_data(config: Any, tokenizer: Any, options: dict[str, Any], folder: Path,
                      log: Callable[[str], None] = lambda m: None) -> RaftData:
    """The RAFT files of a run's data (and eval) file: `config` is its TrainConfig, `options` its
    `data_options`. Every row must be a conversation ending in an answer."""
    from ..data import DataError, DataIssue
    from ..errors import ConfigError

    if config.objective != "sft":
        raise ConfigError(f"retrieval: trains answers (objective sft); objective {config.objective} is not supported")
    section: RetrievalTrainConfig = config.retrieval
    retriever = Retriever.load(section.knowledge, section.answer_settings(RetrievalSettings()), log)
    out: dict[str, str | None] = {"data": None, "eval": None}
    resolved, summary = section, None
    for name in ("data", "eval"):
        path = getattr(config, name)
        if path is None:
            continue
        records = read_records(path, **options)
        questions = answered_questions(records)
        if len(questions) != len(records):
            raise DataError([DataIssue(str(path), 0, "(file)", "has rows that are not questions with answers: "
                                       "training with `retrieval:` needs a conversation ending in an answer per row")])
        examples, built = raft_examples(questions, retriever, resolved, tokenizer, config.max_seq_tokens, config.seed)
        if name == "data":  # the eval file is built with the shares the training file resolved
            summary = built
            resolved = dataclasses.replace(section, gold_share=built.gold_share, handoff_share=built.handoff_share,
                                           min_relevance=built.min_relevance)
        key = hashlib.sha256(json.dumps([e.messages for e in examples]).encode()).hexdigest()[:16]
        out[name] = str(raft_data_file(path, examples, key, folder))
    assert summary is not None and out["data"] is not None
    log(f"retrieval: {len(retriever.passages)} passages; gold share {summary.gold_share:.2f} (recall@"
        f"{section.top_k} {summary.measured_recall:.2f}), hand-off share {summary.handoff_share:.2f}, relevance "
        f"floor {summary.min_relevance:.2f}" + (" (measured)" if section.min_relevance is None else "") + "; rows: "
        + ", ".join(f"{r} {n}" for r, n in summary.roles.items()) + f"; {summary.without_passages} without passages")
    return RaftData(out["data"], out["eval"], resolved, summary)


def run_retrieval(run_config: Any, knowledge: str | Path | None,
                  settings: RetrievalSettings) -> tuple[str | Path | None, RetrievalSettings]:
    """What a command answers a run with: for a run trained with `retrieval:`, its knowledge source when
    none is given, its hand-off and citations, and its retriever and passage count unless the command
    was given others than RetrievalSettings' defaults; any other run, as given."""
    section: RetrievalTrainConfig | None = getattr(run_config, "retrieval", None)
    if section is None:
        return knowledge, settings
    defaults = RetrievalSettings()
    answer = section.answer_settings(settings)
    answer = dataclasses.replace(answer, retriever=settings.retriever if settings.retriever != defaults.retriever
                                 else section.retriever, top_k=settings.top_k if settings.top_k != defaults.top_k
                                 else section.top_k)
    return (knowledge if knowledge is not None else section.knowledge), answer


def run_retriever(run_config: Any, knowledge: str | Path | None = None,
                  settings: RetrievalSettings = RetrievalSettings(), log: Callable[[str], None] = lambda m: None,
                  embedder: Any = None) -> Retriever | None:
    """The `Retriever` a command answers a run with (`run_retrieval`: a RAFT run's own by default), or
    None when it has no knowledge source; `embedder` shares one loaded embedding model."""
    knowledge, settings = run_retrieval(run_config, knowledge, settings)
    return None if knowledge is None else Retriever.load(knowledge, settings, log, embedder)


def training_files(config: Any, tokenizer: Any, log: Callable[[str], None] = lambda m: None
                   ) -> tuple[Any, tuple[str, str | None], dict[str, Any]]:
    """The files `train` reads (data, eval) and how (`data_options`): the user's, or with `retrieval:`
    their RAFT versions (chat rows, so no column mapping) and the config with its shares filled in."""
    from ..config import cache_dir
    from ..data import data_options

    options = data_options(config)
    if config.retrieval is None:
        return config, (config.data, config.eval), options
    raft = prepare_raft_data(config, tokenizer, options, cache_dir() / "raft", log)
    return dataclasses.replace(config, retrieval=raft.retrieval), (raft.data, raft.eval), {**options, "columns": None}


def chat_retrieval(run_config: Any, knowledge: str | Path | None, settings: RetrievalSettings, model: Any,
                   tokenizer: Any, max_new_tokens: int, log: Callable[[str], None] = lambda m: None
                   ) -> tuple[Callable[[list[dict[str, str]]], list[dict[str, str]]] | None,
                              Callable[[str], str] | None]:
    """`chat`'s retrieval (the run's own by default, `run_retrieval`): what puts passages into a prompt,
    and for a run trained to cite, what names the sources an answer cites (`sources: [2] faq.jsonl:3`)."""
    from ..evaluation.handoff import sources_line

    retriever = run_retriever(run_config, knowledge, settings, log)
    if retriever is None:
        return None, None
    budget = retriever.prompt_budget(model, max_new_tokens)
    shown: list[str] = []  # the sources of the passages in the last prompt, for its citations

    def augment(messages: list[dict[str, str]]) -> list[dict[str, str]]:
        passages = retriever.find(messages[-1]["content"])
        shown[:] = [p.source for p in passages]
        return retriever.augment_with(messages, passages, tokenizer, budget)

    return augment, ((lambda answer: sources_line(answer, shown)) if retriever.settings.cite else None)


def with_knowledge(config: Any, knowledge: str | None) -> Any:
    """`train --knowledge PATH`: the config with `retrieval.knowledge` set (the section's defaults for
    the rest when it had none); unchanged without PATH."""
    if knowledge is None:
        return config
    section = config.retrieval or RetrievalTrainConfig(knowledge=knowledge)
    return dataclasses.replace(config, retrieval=dataclasses.replace(section, knowledge=knowledge))
