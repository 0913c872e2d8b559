"""How well a RAFT run could tell the held-out questions whose passages hold the answer (compare's
`found` split) from the same questions with every passage holding it left out (`unanswerable`), by
two signals: the model's own probability of starting its hand-off, and the best passage's relevance
(the cosine that `retrieval.min_relevance` floors). Both are read on the prompts without the floor,
so the model's own signal is measured where it has passages to read. Prints each signal's AUC (0.5:
no better than chance) and, for the model, the share of questions whose unanswerable prompt gets the
higher hand-off probability.

    python examples/raft-demo/handoff_signal.py runs/raft-demo [--limit 101]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from tunesmith.commands.compare import prompt_passages, question_splits, rag_prompts, run_settings, sample
from tunesmith.inference.decode import adapters_merged
from tunesmith.retrieval import Retriever
from tunesmith.run import RunDir, load_run_and_base
from tunesmith.settings import CompareSettings


def auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney AUC."""
    above = (positives[:, None] > negatives[None, :]).mean()
    return float(above + 0.5 * (positives[:, None] == negatives[None, :]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--limit", type=int, default=101, help="held-out questions (compare's sample)")
    args = parser.parse_args()
    run = RunDir.open(args.run)
    config = run.config()
    model, tokenizer, _, _ = load_run_and_base(run.path)
    knowledge, settings = run_settings(config, None, CompareSettings(limit=args.limit, seen=0))
    unfloored = dataclasses.replace(settings.retrieval, min_relevance=None)
    unseen = sample(question_splits(config, tokenizer, None)[0], args.limit, config.seed)
    retriever = Retriever.load(knowledge, unfloored)
    top = unfloored.top_k
    asked = [q.messages[-1]["content"] for q in unseen]
    ranked = retriever.retrieve(asked, max(top, *settings.recall_ks) + top)
    budget = retriever.prompt_budget(model, settings.max_new_tokens)
    holds, prompts = rag_prompts(retriever, unseen, ranked, tokenizer, budget, len(unseen))
    n = len(unseen)
    found = np.array([any(row[:top]) for row in holds])
    first = tokenizer.encode(unfloored.handoff, add_special_tokens=False)[0]
    with adapters_merged(model) as decoding, torch.no_grad():
        handoff = np.array([float(decoding(torch.tensor([p])).logits[0, -1].float().log_softmax(-1)[first])
                            for p in prompts])
    chosen = prompt_passages(ranked, holds, top, n)
    relevance = np.array([max(retriever.relevance(q, c)) for q, c in zip(asked + asked, chosen)])
    model_found, model_unans = handoff[:n][found], handoff[n:]
    print(f"{args.run}: {int(found.sum())} found, {n} unanswerable")
    print(f"  the model's hand-off probability: AUC {auc(model_found, model_unans):.3f}; higher on the "
          f"unanswerable prompt for {np.mean(handoff[n:][found] > model_found):.3f} of the found questions")
    print(f"  the best passage's relevance:     AUC {auc(-relevance[:n][found], -relevance[n:]):.3f}")


if __name__ == "__main__":
    main()
