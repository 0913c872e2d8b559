"""Brand-voice preference pairs from the bundled FAQ: the company's answer (chosen) over the base
model's own greedy answer to the same question (rejected). The base answers are generated once and
cached in base-answers.jsonl beside this file (keyed by model and question), so a second build is
instant and the pairs are the same.

    python examples/voice-dpo/build.py [--model smollm2-135m-instruct] [--rows 200] [--seed 0]

writes examples/voice-dpo/pairs.jsonl ({"prompt", "chosen", "rejected"} rows).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

FAQ = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"
HERE = Path(__file__).resolve().parent
MAX_NEW_TOKENS = 160  # the FAQ's answers: median about 60 tokens, few over 150


def questions(rows: int, seed: int) -> list[tuple[str, str]]:
    """A seeded sample of (question, company answer) from the FAQ, in file order."""
    from tunesmith.data import read_records

    records = read_records(FAQ)
    chosen = sorted(random.Random(seed).sample(range(len(records)), min(rows, len(records))))
    return [(records[i].messages[-2].content, records[i].messages[-1].content) for i in chosen]


def base_answers(model_name: str, prompts: list[str], cache: Path) -> dict[str, str]:
    """The base model's greedy answer to each prompt; only those not in `cache` are generated."""
    import torch

    from tunesmith.data import encode_prompt
    from tunesmith.data.render import end_of_turn_ids, pad_id
    from tunesmith.inference.decode import generate_batch
    from tunesmith.model.loading import load_model
    from tunesmith.model.tokenizer import load_tokenizer

    known = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["model"] == model_name:
                known[row["prompt"]] = row["answer"]
    missing = [p for p in prompts if p not in known]
    if missing:
        torch.manual_seed(0)  # greedy decoding draws nothing; the seed only pins any library default
        tokenizer = load_tokenizer(model_name)
        model = load_model(model_name).eval()
        ids = [encode_prompt([{"role": "user", "content": p}], tokenizer) for p in missing]
        with torch.no_grad():
            out = generate_batch(model, ids, MAX_NEW_TOKENS, sorted(end_of_turn_ids(tokenizer)), pad_id(tokenizer))
        with cache.open("a", encoding="utf-8") as handle:
            for prompt, answer in zip(missing, out):
                text = tokenizer.decode(answer, skip_special_tokens=True).strip()
                known[prompt] = text
                handle.write(json.dumps({"model": model_name, "prompt": prompt, "answer": text}) + "\n")
    return known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=200, help="FAQ questions to pair (of 503)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(HERE / "pairs.jsonl"))
    args = parser.parse_args()
    faq = questions(args.rows, args.seed)
    answers = base_answers(args.model, [q for q, _ in faq], HERE / "base-answers.jsonl")
    rows = [{"prompt": q, "chosen": a, "rejected": answers[q]} for q, a in faq
            if answers[q].strip() and answers[q].strip() != a.strip()]  # identical answers teach nothing
    Path(args.output).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} pairs -> {args.output} ({len(faq) - len(rows)} skipped: the base answered as the company)")


if __name__ == "__main__":
    main()
