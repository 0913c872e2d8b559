"""The RFT demo's data (`make rft-demo`, docs/rft.md): route each FAQ question to its team and name the
rule or authority its answer rests on, as one JSON object, from the bundled FAQ's `category` and
`sources` fields (zaragoza_construction_faq's faq-en.jsonl).

Writes, beside this file:
- `prompts.jsonl`: OpenAI's reinforcement rows: the system prompt (the teams' list and the answer's
  shape) and the question, plus the fields the grader reads (`team`, `source`, `sources`);
- `answers.jsonl`: the same rows with the FAQ's own answer as the assistant turn (the SFT data, and
  what `tunesmith grade grader.json answers.jsonl` scores 1.0 on every row).

    python examples/rft-demo/build.py
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from tunesmith.data.similarity import normalize

HERE = Path(__file__).resolve().parent


def faq_rows() -> list[dict]:
    text = resources.files("zaragoza_construction_faq").joinpath("data/faq-en.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def system_prompt(teams: list[str]) -> str:
    return ("You route customer questions for a Swedish construction firm. Answer with one JSON object and "
            'nothing else: {"team": the team that handles the question, "source": the law, rule or authority '
            f"the answer rests on}}. Teams: {', '.join(teams)}.")


def build(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    teams = sorted({row["category"] for row in rows})
    system = system_prompt(teams)
    prompts, answers = [], []
    seen: set[str] = set()
    for row in rows:
        question = normalize(row["q"])
        if question in seen:  # the FAQ asks a few questions twice: one copy, so none is both trained and held out
            continue
        seen.add(question)
        fields = {"team": row["category"], "source": row["sources"][0], "sources": row["sources"]}
        messages = [{"role": "system", "content": system}, {"role": "user", "content": row["q"]}]
        prompts.append({"messages": messages, **fields})
        answer = json.dumps({"team": row["category"], "source": row["sources"][0]}, ensure_ascii=False)
        answers.append({"messages": messages + [{"role": "assistant", "content": answer}], **fields})
    return prompts, answers


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    prompts, answers = build(faq_rows())
    write_jsonl(HERE / "prompts.jsonl", prompts)
    write_jsonl(HERE / "answers.jsonl", answers)
    print(f"wrote {len(prompts)} rows to {HERE / 'prompts.jsonl'} and {HERE / 'answers.jsonl'}")


if __name__ == "__main__":
    main()
