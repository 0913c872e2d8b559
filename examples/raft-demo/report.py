"""The RAFT demo's figures from the two runs' compare.json: the four-way table of the plain tune
(base, base+RAG, tuned, tuned+RAG) with the RAFT model + RAG beside it, the RAFT run's found / missed
/ unanswerable splits, and a few held-out answers side by side.

    python examples/raft-demo/report.py [runs/compare-demo] [runs/raft-demo]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("token_f1", "rouge_l")
RATES = ("handoff_rate", "made_up_rate", "false_handoff_rate", "citation_accuracy")
SAMPLES = 3


def cell(score: dict[str, Any] | None) -> str:
    return "-" if score is None else f"{score['value']:.3f} [{score['ci95'][0]:.3f}, {score['ci95'][1]:.3f}]"


def report_lines(plain: dict[str, Any], raft: dict[str, Any]) -> list[str]:
    """The demo's closing lines from the plain tune's compare.json and the RAFT run's."""
    unseen = plain["splits"]["unseen"]
    rows = [(s, unseen["systems"][s]) for s in ("base", "base+rag", "tuned", "tuned+rag")]
    rows.append(("raft+rag", raft["splits"]["unseen"]["systems"]["tuned+rag"]))
    lines = [f"held-out questions ({unseen['n']}), value [95% CI]:", f"  {'system':<10}"
             + "".join(f"{c:>24}" for c in COLUMNS)]
    lines += [f"  {name:<10}" + "".join(f"{cell(s[c]):>24}" for c in COLUMNS) for name, s in rows]
    floor = raft.get("retrieval", {}).get("min_relevance")
    if floor:
        lines.append(f"raft+rag's relevance floor {floor:.2f}: where no passage reaches it, no passages go in "
                     "and the RAFT run hands off")
    for name in ("found", "missed", "unanswerable"):
        split = raft["splits"].get(name)
        if split is None:
            continue
        lines.append(f"{name} ({split['n']}): {split['description']}")
        for system, label in (("base+rag", "base+rag"), ("tuned+rag", "raft+rag")):
            scores = split["systems"][system]
            lines.append(f"  {label:<10} " + "; ".join(f"{m} {cell(scores[m])}" for m in ("token_f1", *RATES)
                                                      if m in scores))
    answers = {x["question"]: x for x in plain["samples"]}
    for x in raft["samples"][:SAMPLES]:
        lines += ["", f"Q: {x['question']}", f"  reference: {x['reference']}"]
        if x["question"] in answers:
            lines += [f"  base+rag:  {answers[x['question']]['base+rag']}",
                      f"  tuned+rag: {answers[x['question']]['tuned+rag']}"]
        lines.append(f"  raft+rag:  {x['tuned+rag']}")
    return [*lines, "", raft["recommendation"]]


def main() -> None:
    args = sys.argv[1:]
    plain = Path(args[0] if args else "runs/compare-demo")
    raft = Path(args[1] if len(args) > 1 else "runs/raft-demo")
    for line in report_lines(*(json.loads((run / "compare.json").read_text()) for run in (plain, raft))):
        print(line)


if __name__ == "__main__":
    main()
