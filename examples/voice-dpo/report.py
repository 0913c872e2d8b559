"""The brand-voice demo's figures from its run directories: held-out preference accuracy and reward
margin before (step 0) and after DPO, each with its 95% interval, and the forgetting verdict.

    python examples/voice-dpo/report.py [runs/voice-dpo]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/voice-dpo")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    evals = [r for r in rows if "preference_accuracy" in r]
    chosen = next((r for r in evals if r["step"] == summary["selected_step"]), evals[-1])
    for label, r in (("before (step 0)", evals[0]), (f"after (step {chosen['step']})", chosen)):
        acc, margin = r["preference_accuracy_ci"], r["reward_margin_ci"]
        print(f"{label}: preference accuracy {r['preference_accuracy']:.3f} [{acc[0]:.3f}, {acc[1]:.3f}], "
              f"reward margin {r['reward_margin']:.3f} [{margin[0]:.3f}, {margin[1]:.3f}] "
              f"on {r['pairs']} held-out pairs")
    print(f"forgetting: {'within budget' if summary.get('within_budget') else 'over budget or not measured'}; "
          f"{summary['steps']} steps in {summary['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
