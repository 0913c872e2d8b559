"""The RFT demo's figures (docs/rft.md, `make rft-demo`): the held-out reward of the base, the SFT run
and the GRPO run that started from it, each with its forgetting verdict, and `rft-tradeoff.png`: the
held-out reward of every evaluation's checkpoint of both runs against the worst forgetting probe's
share of its budget at that step (RL's Razor, Shenfeld et al. 2025: does the reward GRPO adds cost less
forgetting than SFT's?).

Every reward here is of the greedy answers (at most grpo.max_completion_tokens tokens) to the GRPO
run's held-out prompts, graded by its grader; SFT's held-out split is checked to be the same questions.
The base, SFT and GRPO rows are answered here in fp32, as eval answers (paired intervals need each
prompt's reward), and so are the SFT checkpoints, each loaded in turn into one model; the GRPO
checkpoints' come from the GRPO run's own evaluations, which answered and graded the same prompts
while it trained (its line starts at the SFT run's kept checkpoint, where GRPO started).

    python examples/rft-demo/report.py [runs/rft-sft] [runs/rft-grpo]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.commands.evaluate_reward import greedy_answers, held_out_prompts
from tunesmith.data import data_options, prepare_data
from tunesmith.evaluation.bootstrap import paired_summary
from tunesmith.evaluation.report import budget_points
from tunesmith.graders import GradingSession, configured_judge, make_sample, parse_grader
from tunesmith.model.loading import load_tuned
from tunesmith.model.tokenizer import load_tokenizer
from tunesmith.run import RunDir
from tunesmith.training.checkpoint import load_trainable

PLOT = "rft-tradeoff.png"
SHOWN = 3
"""Held-out answers quoted, base beside SFT beside GRPO."""


def same_questions(sft: RunDir, grpo: RunDir, tokenizer: Any) -> None:
    """The SFT run held out the rows the GRPO run holds out (the two files list the same questions in
    the same order, split with the same seed and val_fraction)."""
    config = sft.config()
    held = prepare_data(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed,
                        **data_options(config)).val
    lines = sorted(int(e.source.rpartition(":")[2]) for e in held)
    grpo_config = grpo.config()
    from tunesmith.data.prompts import prepare_prompts

    theirs = prepare_prompts(grpo_config.data, grpo_config.eval, tokenizer, grpo_config.max_seq_tokens,
                             grpo_config.val_fraction, grpo_config.seed, **data_options(grpo_config)).val
    if lines != sorted(int(e.source.rpartition(":")[2]) for e in theirs):
        raise SystemExit("the SFT and GRPO runs held out different questions: give both the same data rows, "
                         "seed and val_fraction")


def checkpoint_steps(run: RunDir) -> list[int]:
    """Evaluation steps whose checkpoint is still on disk, in order."""
    kept = {int(p.name.split("-")[1]) for p in (run.path / "checkpoints").glob("step-*") if (p / "COMPLETE").exists()}
    return [r["step"] for r in run.metrics() if "val_loss" in r and r["step"] in kept]


def worst_shares(run: RunDir) -> dict[int, tuple[float, str]]:
    """Each evaluation step's worst probe's share of its budget, and that probe (as the verdict reads it)."""
    config = run.config()
    return {step: (share, probe) for step, _, share, probe in budget_points(run.metrics(), config.forgetting.budget)}


def verdict(run: RunDir) -> str:
    """`tunesmith eval`'s forgetting verdict where it ran, else the probes at the kept step."""
    evaluation = run.evaluation()
    if evaluation is not None and "within_budget" in evaluation:
        return "within the forgetting budget" if evaluation["within_budget"] else "OVER the forgetting budget"
    summary = run.summary() or {}
    return ("within the forgetting budget (training's probes)" if summary.get("within_budget")
            else "OVER the forgetting budget (training's probes)")


def main() -> None:
    args = sys.argv[1:]
    sft, grpo = (RunDir.open(Path(a)) for a in (args[0] if args else "runs/rft-sft",
                                                  args[1] if len(args) > 1 else "runs/rft-grpo"))
    config = grpo.config()
    tokenizer = load_tokenizer(config.model)
    same_questions(sft, grpo, tokenizer)
    prompts, rows = held_out_prompts(config, tokenizer)
    tokens = config.grpo.max_completion_tokens
    # fp32, as eval loads a run: merging a LoRA into bf16 weights rounds away part of its small delta
    model = load_tuned(sft.path, config.model, config.method).eval()
    session = GradingSession(parse_grader(config.grader, "the demo's grader"),
                             configured_judge(config.grpo.judge_url, config.grpo.judge_model))

    def rewards(texts: list[str]) -> np.ndarray:
        return np.array([g.reward for g in session.grade_many((make_sample(t), r) for t, r in zip(texts, rows))])

    answers: dict[str, list[str]] = {}
    with model.disable_adapter():
        answers["base"] = greedy_answers(model, tokenizer, prompts, tokens)
    answers["sft"] = greedy_answers(model, tokenizer, prompts, tokens)  # the kept adapter (runs/rft-sft/adapter)
    model.load_adapter(str(grpo.path / "adapter"), adapter_name="grpo")
    model.set_adapter("grpo")
    answers["grpo"] = greedy_answers(model, tokenizer, prompts, tokens)
    scores = {name: rewards(texts) for name, texts in answers.items()}
    ones = np.ones(len(prompts))
    print(f"held-out reward on {len(prompts)} questions the runs never trained on (greedy answers, {tokens} tokens):")
    print(f"  base  {scores['base'].mean():.3f}")
    for name, run, against in (("SFT", sft, "base"), ("GRPO", grpo, "base"), ("GRPO", grpo, "sft")):
        s = paired_summary(scores[against], scores[name.lower()], ones)
        lo, hi = s["ci95"]
        print(f"  {name:<5} {s['tuned']:.3f}  vs {against}: {s['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
              + (f"; {verdict(run)}" if against == "base" else ""))

    points: dict[str, list[tuple[int, float, float, str]]] = {"SFT": [], "GRPO": []}
    model.set_adapter("default")  # each SFT checkpoint loads into the SFT adapter's slot
    shares = worst_shares(sft)
    for step in checkpoint_steps(sft):
        if step in shares:
            load_trainable(sft.path / "checkpoints" / f"step-{step}", model)
            points["SFT"].append((step, float(rewards(greedy_answers(model, tokenizer, prompts, tokens)).mean()),
                                  *shares[step]))
    shares = worst_shares(grpo)  # GRPO's evaluations graded these prompts' greedy answers as they trained
    points["GRPO"] = [(r["step"], r["reward"], *shares[r["step"]]) for r in grpo.metrics()
                      if "reward" in r and "val_loss" in r and r["step"] in shares]
    for label, measured in points.items():
        for step, reward, share, probe in measured:
            print(f"  {label} step {step}: reward {reward:.3f}, worst probe {probe} at {100 * share:.0f}% of its "
                  "budget")
    session.close()
    plot(points, float(scores["base"].mean()), (sft.summary() or {}).get("selected_step"), sft.path.parent / PLOT)
    for i in range(min(SHOWN, len(prompts))):
        print(f"\nQ: {tokenizer.decode(prompts[i], skip_special_tokens=True).splitlines()[-2][:200]}")
        print(f"  expected: {json.dumps({'team': rows[i]['team'], 'source': rows[i]['source']}, ensure_ascii=False)}")
        for name in ("base", "sft", "grpo"):
            print(f"  {name + ':':<6} {answers[name][i].strip()[:160]}")
    print(f"\nplot: {sft.path.parent / PLOT}")


def plot(points: dict[str, list[tuple[int, float, float, str]]], base_reward: float, grpo_start: int | None,
         path: Path) -> None:
    """Held-out reward (y) against the worst probe's share of its budget (x) at each checkpoint, a line
    per run: SFT's from the base's point (0% of any budget), GRPO's from SFT's step `grpo_start` (the
    kept checkpoint, whose adapter GRPO started from); the budget at 100%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for (label, rows), color in zip(points.items(), ("#3a6ea5", "#d1495b")):
        # SFT's line starts at the base; GRPO's where it started: the SFT checkpoint it was given
        start = [(0.0, base_reward)] if label == "SFT" else [(100 * min(share, 3.0), reward)
                                                              for step, reward, share, _ in points["SFT"]
                                                              if step == grpo_start]
        xs = [x for x, _ in start] + [100 * min(share, 3.0) for _, _, share, _ in rows]
        ys = [y for _, y in start] + [reward for _, reward, _, _ in rows]
        ax.plot(xs, ys, marker="o", color=color, label=label)
        for step, reward, share, _ in rows:
            ax.annotate(str(step), (100 * min(share, 3.0), reward), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color=color)
    ax.axvline(100, color="#555", linestyle="--", linewidth=1, label="forgetting budget")
    ax.set_xlabel("worst forgetting probe: share of its budget (%)")
    ax.set_ylabel("held-out reward (greedy)")
    ax.set_title("Task reward against forgetting, each checkpoint (step)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
