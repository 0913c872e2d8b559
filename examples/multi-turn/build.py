"""Build the multi-turn chat example from chatterbot-corpus (BSD; installed by `make setup`).

Every conversation of the English corpus, except trivia (a forgetting probe reads it), becomes one
row of messages: the turns alternate user, assistant, starting with the user, and a conversation
of one line is skipped. Written to conversations.jsonl beside this file:

    .venv/bin/python examples/multi-turn/build.py
    .venv/bin/tunesmith train examples/multi-turn/chat.yaml
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

SKIPPED = {"trivia.yml"}  # the trivia probe's own items must never be trained on


def conversations(corpus: Path) -> list[list[dict[str, str]]]:
    rows = []
    for path in sorted((corpus / "data" / "english").glob("*.yml")):
        if path.name in SKIPPED:
            continue
        for turns in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            turns = [str(t).strip() for t in turns if str(t).strip()]
            if len(turns) < 2:
                continue
            if len(turns) % 2:  # end on an assistant turn: the last user line would train nothing
                turns = turns[:-1]
            rows.append([{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)])
    return rows


def main() -> None:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("chatterbot-corpus is not installed: run `make setup` first")
    rows = conversations(Path(list(spec.submodule_search_locations)[0]))
    out = Path(__file__).with_name("conversations.jsonl")
    out.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in rows), encoding="utf-8")
    turns = sum(len(m) for m in rows)
    print(f"{out}: {len(rows)} conversations, {turns} turns ({turns / len(rows):.1f} a conversation)")


if __name__ == "__main__":
    main()
