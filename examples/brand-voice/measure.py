"""Guide in the prompt, or examples alone? Train both configs of this folder, then score the base and
the tuned models on the held-out briefs against the style guide's checkable rules.

    .venv/bin/python examples/brand-voice/measure.py        # about 10 minutes on 2 CPU cores

Prints one JSON object: per system, the held-out loss where it has one, and the share of answers
that end with the sign-off, have no exclamation mark, no hype word, and British spelling where the
word comes up, plus mean words per sentence (the guide asks for under fifteen).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path

from tunesmith import generate, load_config, load_run, train
from tunesmith.data import data_options, prepare_data, read_records
from tunesmith.data.records import read_system_prompt
from tunesmith.data.render import with_system_prompt
from tunesmith.model.tokenizer import load_tokenizer

HERE = Path(__file__).resolve().parent
SIGN_OFF = "Brew well, the Larkspur roasters."
HYPE = re.compile(r"\b(amazing|best|ever|incredible|game-changer|awesome|perfect)\b", re.I)
AMERICAN = re.compile(r"\b(flavor|color|favorite|organize)\b", re.I)


def style(answer: str) -> dict[str, float]:
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", answer.strip()) if s]
    words = len(answer.split())
    return {"sign_off": float(answer.strip().endswith(SIGN_OFF)), "no_exclamation": float("!" not in answer),
            "no_hype": float(not HYPE.search(answer)), "british": float(not AMERICAN.search(answer)),
            "words_per_sentence": words / max(1, len(sentences))}


def held_out_briefs(config) -> list[tuple[str, str]]:
    """(brief, reference post) of the validation split, exactly as training split it."""
    tokenizer = load_tokenizer(config.model)
    data = prepare_data(config.data, None, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed,
                        **data_options(config))
    sources = {e.source for e in data.val}
    records = read_records(config.data, columns=config.columns)
    return [(r.messages[-2].content, r.messages[-1].content) for r in records if r.source in sources]


def main() -> None:
    started = time.perf_counter()
    results: dict[str, dict[str, float]] = {}
    guide_text = read_system_prompt(str(HERE / "style-guide.md"))
    runs = {}
    for name in ("examples-only", "guide"):
        config = load_config(HERE / f"{name}.yaml", {"output": f"runs/brand-voice-{name}"})
        result = train(config, overwrite=True)  # its progress bar shows the long part
        runs[name] = (config, result)
    config = runs["guide"][0]
    briefs = held_out_briefs(config)
    systems = {"base": (runs["examples-only"][1].run_dir, None, True),
               "base + guide in prompt": (runs["guide"][1].run_dir, guide_text, True),
               "tuned on examples alone": (runs["examples-only"][1].run_dir, None, False),
               "tuned with the guide": (runs["guide"][1].run_dir, guide_text, False)}
    samples = {}
    for label, (run_dir, system, base) in systems.items():
        print(f"answering {len(briefs)} held-out briefs: {label}", file=sys.stderr, flush=True)
        model, tokenizer = load_run(run_dir)
        scores = []
        with (model.disable_adapter() if base else contextlib.nullcontext()):
            for brief, _ in briefs:
                messages = with_system_prompt([{"role": "user", "content": brief}], system)
                answer = generate(model, tokenizer, messages, max_new_tokens=96)
                scores.append(style(answer))
        samples[label] = answer
        results[label] = {k: round(sum(s[k] for s in scores) / len(scores), 3) for k in scores[0]}
    for name, (_, result) in runs.items():
        label = "tuned on examples alone" if name == "examples-only" else "tuned with the guide"
        results[label]["held_out_loss"] = round(result.final_val_loss, 4)
        results[label]["base_held_out_loss"] = round(result.base_val_loss, 4)
    print(json.dumps({"held_out_briefs": len(briefs), "systems": results, "last_sample": samples,
                      "minutes": round((time.perf_counter() - started) / 60, 1)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
