"""RUN/report.html with PNG plots beside it: the verdict first, then the numbers behind it."""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

from ..config import ForgettingBudget
from ..forgetting.budget import KIND_OF_METRIC, budget_share
from ..run import RunDir, write_atomic

LOSS_PNG = "report-loss.png"
PROBES_PNG = "report-probes.png"
TRADEOFF_PNG = "report-tradeoff.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """PNG written to a temporary file and renamed, like every other run file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        _pyplot().close(fig)


def plot_losses(rows: list[dict[str, Any]], path: Path) -> bool:
    """Training loss per step and validation loss per evaluation; False when there is nothing to plot."""
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r and "step" in r]
    if not train and not val:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss", color="#7a9cc6", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="#d1495b")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / trained token)")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def plot_probes(general: dict[str, dict[str, Any]], path: Path) -> bool:
    """Base and tuned bars per probe, the tuned bar carrying the 95% CI of the change."""
    if not general:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(general), figsize=(2.4 * len(general), 3), squeeze=False)
    for ax, (name, score) in zip(axes[0], general.items()):
        lo, hi = score["ci95"]
        err = [[max(0.0, score["delta"] - lo)], [max(0.0, hi - score["delta"])]]
        ax.bar([0], [score["base"]], color="#9aa5b1", label="base")
        ax.bar([1], [score["tuned"]], color="#d1495b", yerr=err, capsize=4, label="tuned")
        ax.set_xticks([0, 1], ["base", "tuned"])
        ax.set_title(f"{name}\n({score['metric']})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return True


def budget_points(rows: list[dict[str, Any]], budget: ForgettingBudget) -> list[tuple[int, float, float, str]]:
    """(step, task gain, the worst probe's share of its budget, that probe) at each evaluation that
    measured probes during training; shares from `budget_share`, as the verdict reads them. Rows
    from before probes carried their interval count a multiple-choice drop as significant."""
    val = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r and "step" in r}
    base_loss = val.get(0)
    points = []
    for r in rows:
        probes = r.get("probes")
        if not probes or not base_loss or r.get("step") not in val:
            continue
        shares = {name: budget_share(budget, KIND_OF_METRIC.get(p.get("metric"), "kl"), p["delta"], p["tuned"],
                                     p.get("relative_delta"), p.get("ci95") or (-1.0, -1.0))
                  for name, p in probes.items()}
        worst = max(shares, key=shares.get)
        points.append((r["step"], (base_loss - val[r["step"]]) / base_loss, shares[worst], worst))
    return points


def plot_tradeoff(rows: list[dict[str, Any]], budget: ForgettingBudget, path: Path) -> bool:
    """Task gain against forgetting at each evaluation with probes: the forgetting axis is the worst
    probe's share of its own budget (100% is the limit), named beside each point, so the plot says
    what the verdict says whichever probe decides it."""
    points = budget_points(rows, budget)
    if not points:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for step, gain, share, probe in points:
        shown = min(share, 3.0) * 100  # an infinite share (a zero budget) at the top of the axis
        ax.scatter([gain * 100], [shown], color="#2e8b57" if share <= 1 else "#d1495b", zorder=3)
        ax.annotate(f"step {step}: {probe}", (gain * 100, shown), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.axhline(100, color="#d1495b", linestyle="--", linewidth=1, label="budget (each probe's own limit)")
    ax.set_xlabel("task gain: validation loss decrease (%)")
    ax.set_ylabel("worst probe: share of its budget (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _fmt(value: Any, metric: str) -> str:
    if value is None:
        return "—"
    if metric == "accuracy" or metric in ("exact_match", "token_f1", "rouge_l"):
        return f"{value:.3f}"
    return f"{value:.4g}"


def _table(rows: list[tuple[str, dict[str, Any], str, str]]) -> str:
    head = "<tr><th>measure</th><th>base</th><th>tuned</th><th>change</th><th>95% CI of change</th><th></th></tr>"
    body = []
    for name, score, metric, status in rows:
        lo, hi = score["ci95"]
        body.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(score['base'], metric)}</td>"
                    f"<td>{_fmt(score['tuned'], metric)}</td><td>{score['delta']:+.4g}</td>"
                    f"<td>[{lo:+.4g}, {hi:+.4g}]</td><td>{status}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


SPLIT_COLUMNS = ("token_f1", "handoff_rate", "made_up_rate", "false_handoff_rate", "citation_accuracy")
"""What the report shows of each found / missed / unanswerable split (a run trained with retrieval)."""


def _splits_table(splits: dict[str, Any]) -> str:
    """base+RAG and tuned+RAG on each split of a run trained with retrieval: value [95% CI] per column."""
    def cell(score: dict[str, Any] | None) -> str:
        return "<td>—</td>" if score is None else \
            f"<td>{score['value']:.3f} [{score['ci95'][0]:.3f}, {score['ci95'][1]:.3f}]</td>"

    head = "<tr><th>split</th><th>system</th>" + "".join(f"<th>{c}</th>" for c in SPLIT_COLUMNS) + "</tr>"
    rows = [f"<tr><td>{html.escape(name)} ({split['n']})</td><td>{system}</td>"
            + "".join(cell(split["systems"][system].get(c)) for c in SPLIT_COLUMNS) + "</tr>"
            for name, split in splits.items() for system in ("base+rag", "tuned+rag")]
    return f"<table>{head}{''.join(rows)}</table>"


def write_report(run: RunDir, result: dict[str, Any]) -> Path:
    """Write report.html and its PNGs into the run directory; return the HTML path."""
    rows = run.metrics()
    images = []
    if plot_losses(rows, run.path / LOSS_PNG):
        images.append((LOSS_PNG, "Training and validation loss"))
    if plot_probes(result["general"], run.path / PROBES_PNG):
        images.append((PROBES_PNG, "General probes, base vs tuned (error bar: 95% CI of the change)"))
    if plot_tradeoff(rows, ForgettingBudget(**result["budget"]), run.path / TRADEOFF_PNG):
        images.append((TRADEOFF_PNG, "Task gain vs forgetting at each evaluation: the worst probe's share of its "
                                     "own budget (red: over budget)"))
    ok = result["within_budget"]
    task = result["task"]
    task_rows = [(m, task[m], m, "") for m in ("reward", "loss", "perplexity", "exact_match", "token_f1",
                                                       "rouge_l") if m in task]
    check_by_probe = {c["probe"]: c["ok"] for c in result["budget_checks"]}
    general_rows = [
        (f"{name} ({s['metric']})", s, s["metric"],
         "" if name not in check_by_probe else ("within" if check_by_probe[name] else "<b>over</b>"))
        for name, s in result["general"].items()
    ]
    samples = "".join(
        f"<tr><td>{html.escape(s['prompt'])}</td><td>{html.escape(s['reference'])}</td>"
        f"<td>{html.escape(s['base'])}</td><td>{html.escape(s['tuned'])}</td></tr>"
        for s in task.get("samples", [])
    )
    verdict = "".join(f"<p>{html.escape(line)}</p>" for line in result["verdict"].splitlines())
    splits = "" if not result.get("splits") else (
        "<h2>Answering with retrieval: found, missed, unanswerable</h2><p><small>Held-out questions whose retrieved "
        "passages held the answer, did not, and the same questions with every passage holding it left out "
        "(as <code>tunesmith compare</code> splits them); value [95% CI].</small></p>"
        + _splits_table(result["splits"]))
    figures = "".join(f'<figure><img src="{name}" alt="{html.escape(caption)}">'
                      f'<figcaption>{html.escape(caption)}</figcaption></figure>' for name, caption in images)
    body = f"""<h1>{html.escape(run.path.name)}: {'within' if ok else 'OVER'} the forgetting budget</h1>
<div class="verdict">{verdict}</div>
<p><small>{html.escape(result['method'])} on {html.escape(result['model'])}; probe set
{html.escape(result['probe_set'])}; base and tuned scored on the same examples; CIs from a paired bootstrap
over examples; generated {result['created']} in {result['seconds']:.0f} s.</small></p>
<h2>Task (held-out data, {task['n_examples']} examples; {task.get('n_generated', 0)} answers generated)</h2>
{_table(task_rows)}
{splits}<h2>General abilities</h2>
{_table(general_rows)}
{figures}
<h2>Sample answers</h2>
<table><tr><th>question</th><th>reference</th><th>base</th><th>tuned</th></tr>{samples}</table>
"""
    path = run.path / "report.html"
    write_atomic(path, _page(f"tunesmith report: {run.path.name}", ok, body))
    return path


def _page(title: str, ok: bool, body: str) -> str:
    """The report page around `body`: its title, style, and the verdict box green (ok) or red."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; color: #222; }}
.verdict {{ padding: 0.8rem 1.2rem; border-radius: 6px; border-left: 8px solid {'#2e8b57' if ok else '#d1495b'};
  background: {'#eef8f1' if ok else '#fdeeee'}; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }}
img {{ max-width: 100%; }} small {{ color: #666; }}
</style></head><body>
{body}</body></html>
"""


# --- the learning curve of `tunesmith curve` (curve.json's content)

CURVE_PNG = "curve.png"
FORGETTING_MARKS = {True: ("o", "#2e8b57", "within the forgetting budget"),
                    False: ("X", "#d1495b", "OVER the forgetting budget"),
                    None: ("o", "#7a7a7a", "forgetting not measured")}
"""How each point's forgetting verdict is drawn: marker, colour, legend label."""


def plot_curve(report: dict[str, Any], path: Path) -> None:
    """Held-out loss against training examples (log axis): the points with their 95% intervals,
    marked by their forgetting verdict; the fit, solid over the points and dashed beyond, with its
    bootstrap band; the predictions at 2x and 4x; the base model and the floor as lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    points, fit = report["points"], report["fit"]
    top = points[-1]["examples"]
    band = list(zip(*fit["band"]))  # n, fitted, lo, hi
    ax.fill_between(band[0], band[2], band[3], color="#7a9cc6", alpha=0.25, label="fit: 95% band")
    inside = [i for i, n in enumerate(band[0]) if n <= top * 1.0001]
    ax.plot([band[0][i] for i in inside], [band[1][i] for i in inside], color="#3a6ea5",
            label=f"fit ({fit['fit']['kind']})")
    beyond = [i for i, n in enumerate(band[0]) if n >= top * 0.9999]
    ax.plot([band[0][i] for i in beyond], [band[1][i] for i in beyond], "--", color="#3a6ea5", label="extrapolation")
    for k, key in ((2, "at_2x"), (4, "at_4x")):
        est = fit[key]
        ax.errorbar([k * top], [est["value"]], yerr=[[est["value"] - est["ci95"][0]], [est["ci95"][1] - est["value"]]],
                    fmt="D", mfc="white", color="#3a6ea5", capsize=3)
        ax.annotate(f"{k}x: {est['value']:.3f}", (k * top, est["value"]), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    for verdict, (marker, color, label) in FORGETTING_MARKS.items():
        chosen = [p for p in points if p["within_budget"] is verdict]
        if chosen:
            ax.errorbar([p["examples"] for p in chosen], [p["loss"] for p in chosen],
                        yerr=[[p["loss"] - p["ci95"][0] for p in chosen], [p["ci95"][1] - p["loss"] for p in chosen]],
                        fmt=marker, color=color, capsize=4, markersize=7, label=label, zorder=3)
    ax.axhline(report["base"]["loss"], color="#9aa5b1", linestyle=":", label="base model")
    if fit["floor"] is not None:
        ax.axhline(fit["floor"]["value"], color="#3a6ea5", linestyle=":", linewidth=1, label="fitted floor")
    ax.set_xscale("log")
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel("held-out loss (nats / target token)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def _curve_table(report: dict[str, Any]) -> str:
    generated = any(p["generated"] for p in report["points"])
    head = ("<tr><th>fraction</th><th>training examples</th><th>held-out loss</th><th>95% CI</th><th>forgetting</th>"
            + ("<th>token F1</th><th>ROUGE-L</th>" if generated else "") + "<th>run</th></tr>")
    rows = []
    for p in report["points"]:
        scores = "".join(f"<td>{p['generated'][m]['value']:.3f}</td>" if p["generated"] else "<td>—</td>"
                         for m in ("token_f1", "rouge_l")) if generated else ""
        rows.append(f"<tr><td>{p['fraction']:g}</td><td>{p['examples']:,}</td><td>{p['loss']:.4f}</td>"
                    f"<td>[{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]</td><td>{html.escape(p['forgetting'])}</td>"
                    f"{scores}<td>{html.escape(Path(p['run_dir']).name)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def write_curve_report(root: Path, report: dict[str, Any]) -> Path:
    """OUTPUT/report.html of a learning curve: the verdict, the plot, the points, the fit's figures."""
    if not (root / CURVE_PNG).exists():
        plot_curve(report, root / CURVE_PNG)
    within = not any(p["within_budget"] is False for p in report["points"])  # the box turns red on forgetting
    verdict = "".join(f"<p>{html.escape(line)}</p>" for line in report["verdict"].splitlines())
    base = report["base"]
    body = f"""<h1>{html.escape(root.name)}: learning curve</h1>
<div class="verdict">{verdict}</div>
<p><small>{html.escape(report['method'])} on {html.escape(report['model'])}, {report['epochs']:g} epoch(s) at every
point; every point and the base measured on the same {report['held_out_examples']} held-out examples
({report['held_out_tokens']:,} target tokens); intervals from resampling them; base model
{base['loss']:.4f} [{base['ci95'][0]:.4f}, {base['ci95'][1]:.4f}]; generated {report['created']} in
{report['seconds']:.0f} s.</small></p>
<figure><img src="{CURVE_PNG}" alt="learning curve"><figcaption>Held-out loss against training examples: points
with their 95% intervals (marked by their forgetting verdict), the fit with its 95% band, dashed beyond the
data, and its predictions at 2x and 4x.</figcaption></figure>
<h2>Points</h2>
{_curve_table(report)}
"""
    path = root / "report.html"
    write_atomic(path, _page(f"tunesmith curve: {root.name}", within, body))
    return path
