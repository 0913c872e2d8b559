"""Time `tunesmith data check` on generated chat data (default 100k rows) with the default model's tokenizer.

    python bench/bench_datacheck.py [--rows 100000] [--model smollm2-135m-instruct]

Rows are varied multi-sentence chats (with 1% exact duplicates and a few e-mail addresses), so the
duplicate index, the PII scan and the tokenizer all do real work. Prints rows/s and the totals, then
one JSON line with the machine (bench/machine.py; tokenizing and hashing, no matmuls: no peak).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from machine import describe, machine_record

WORDS = ("permit building municipality application drawing facade extension roof window garage fee week "
         "plan committee decision appeal neighbour boundary height metre storey heating insulation energy "
         "contractor inspection certificate drainage foundation timber concrete steel survey map planning "
         "zone tariff deviation detailed residential commercial parking accessibility fire safety noise").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def write_rows(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        previous: list[str] = []
        for i in range(rows):
            if previous and rng.random() < 0.01:
                handle.write(rng.choice(previous))
                continue
            answer = " ".join(sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(1, 4)))
            if rng.random() < 0.001:
                answer += f" Write to office{i}@example.com."
            row = {"messages": [{"role": "system", "content": "You answer questions about building permits."},
                                {"role": "user", "content": sentence(rng, rng.randint(5, 14))[:-1] + "?"},
                                {"role": "assistant", "content": answer}]}
            line = json.dumps(row) + "\n"
            if len(previous) < 1000:
                previous.append(line)
            handle.write(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    from tunesmith.data.check import check_files
    from tunesmith.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # libraries and tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chat.jsonl"
        write_rows(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        started = time.perf_counter()
        report = check_files(path, None, tokenizer, 1024)
        elapsed = time.perf_counter() - started
    stats = report.stats["splits"]["train"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    machine = machine_record()
    print(describe(machine))
    print(f"{args.rows:,} rows ({size_mb:.0f} MB) checked in {elapsed:.1f} s = {args.rows / elapsed:,.0f} rows/s; "
          f"errors {len(report.errors)}, warnings {len(report.warnings)}, "
          f"duplicates {stats['exact_duplicates']} exact / {stats['near_duplicates']} near, "
          f"tokens median {stats['tokens']['median']} p95 {stats['tokens']['p95']}; peak RSS {peak_mb:.0f} MB "
          f"({base_mb:.0f} MB before the check)")
    print(json.dumps({"bench": "datacheck", "machine": machine, "rows": args.rows, "seconds": round(elapsed, 2),
                      "rows_per_s": round(args.rows / elapsed), "errors": len(report.errors),
                      "warnings": len(report.warnings), "peak_rss_mb": round(peak_mb), "base_rss_mb": round(base_mb)}))


if __name__ == "__main__":
    main()
