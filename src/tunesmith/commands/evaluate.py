"""`tunesmith eval RUN`: base vs tuned on the held-out task data and on every general probe, the
same examples for both, with paired bootstrap CIs; writes RUN/eval.json and RUN/report.html."""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import PREFERENCE_OBJECTIVES, TrainConfig
from ..data import (
    Example,
    answered_questions,
    data_options,
    encode_prompt,
    held_out_questions,
    prepare_data,
    read_records,
)
from ..data.preference import prepare_pairs, read_pairs
from ..data.probe_files import read_probe_file
from ..data.render import end_of_turn_ids, pad_id
from ..evaluation.bootstrap import paired_summary
from ..evaluation.text_metrics import exact_match, loops, rouge_l, style_markers, style_match, token_f1
from ..forgetting.budget import budget_checks
from ..forgetting.measure import measure_probes
from ..forgetting.probes import general_texts
from ..forgetting.scoring import target_logprobs
from ..inference.decode import adapters_merged, generate_batch
from ..model.base import cached_base
from ..retrieval.raft import training_files
from ..run import RunDir, load_run_and_base
from .evaluate_reward import reward_sentence, reward_task_metrics

SAMPLES_SHOWN = 5
"""Generated answers quoted in eval.json and the report, base beside tuned."""


@dataclass(frozen=True)
class TaskSizes:
    generate: int
    """Held-out examples answered by both models and scored against their references."""
    max_new_tokens: int
    """Longest generated answer; FAQ answers are 20-80 tokens."""
    seed: int = 0


TASK_SIZES = {"standard": TaskSizes(generate=12, max_new_tokens=64), "full": TaskSizes(generate=64, max_new_tokens=160)}


def validation_conversations(config: TrainConfig, sources: set[str], data_file: str | None = None,
                             options: dict[str, Any] | None = None) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, reference answer) of the held-out conversations whose last turn is the
    assistant's; raw-text validation data has no references and gives an empty list. `data_file` and
    `options`: what training read instead of the config's files (a RAFT run's, `training_files`)."""
    return [(q.messages, q.reference) for q in held_out_questions(config, sources, data_file, options)]


def generation_sample(config: TrainConfig, val: Sequence[Example], sizes: TaskSizes, data_file: str | None = None,
                      options: dict[str, Any] | None = None) -> list[tuple[list[dict[str, str]], str]]:
    """The held-out questions answered and scored: a seeded sample of `sizes.generate`, the same
    for every model measured on these validation examples."""
    pairs = validation_conversations(config, {e.source for e in val}, data_file, options)
    random.Random(sizes.seed).shuffle(pairs)
    return pairs[: sizes.generate]


def generate_answers(model: Any, tokenizer: Any, pairs: list[tuple[list[dict[str, str]], str]],
                     sizes: TaskSizes) -> list[str]:
    """Greedy answers to the sample's prompts, decoded in batches (`generate_batch`), a tuned
    model's adapter merged while it decodes (`adapters_merged`; the base view is left as it is)."""
    prompts = [encode_prompt(messages, tokenizer) for messages, _ in pairs]
    with adapters_merged(model) as decoding:
        out = generate_batch(decoding, prompts, sizes.max_new_tokens, sorted(end_of_turn_ids(tokenizer)),
                             pad_id(tokenizer))
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]


def task_fingerprint(val: Sequence[Example], pairs: list[tuple[list[dict[str, str]], str]], sizes: TaskSizes,
                     model: Any) -> str:
    """Names the base side of `task_metrics` in the cache: the held-out examples' tokens, the questions
    answered, the answer length and the dtype the model computes in."""
    digest = hashlib.sha256()
    for example in val:  # token ids may be memory-mapped from the token cache
        for ids in (example.input_ids, example.targets):
            digest.update(np.asarray(ids, np.int64).tobytes() + b";")
    digest.update(json.dumps([[m for m, _ in pairs], asdict(sizes), str(next(model.parameters()).dtype)]).encode())
    return "task-" + digest.hexdigest()[:16]


@dataclass(frozen=True)
class TaskData:
    val: list[Example]
    """Held-out examples whose loss is measured (a preference run: the chosen sides)."""
    rejected: list[Example]
    """The rejected sides of a preference run's held-out pairs, in the same order; else empty."""
    pairs: list[tuple[list[dict[str, str]], str]]
    """The questions answered: (prompt messages, reference answer)."""
    train_answers: list[str]
    """The training split's answers, whose typical words are the style markers."""


def task_examples(config: TrainConfig, tokenizer: Any, sizes: TaskSizes) -> TaskData:
    """The held-out examples, the questions answered and the training answers of a run.

    A preference run (objective dpo/orpo) is measured on its held-out pairs: the loss on the chosen
    answers, the rejected ones beside them (which answer each model prefers), and the prompts
    answered against the chosen answer as the reference. Other runs have no rejected sides."""
    if config.objective not in PREFERENCE_OBJECTIVES:
        _, files, options = training_files(config, tokenizer)  # a RAFT run: the prompts it was trained on
        data = prepare_data(*files, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed, **options)
        held_out = {e.source for e in data.val}
        train = [q.reference for q in answered_questions(read_records(files[0], **options))
                 if q.source not in held_out]
        return TaskData(list(data.val), [], generation_sample(config, data.val, sizes, files[1] or files[0], options),
                        train)
    data = prepare_pairs(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed,
                         **data_options(config))
    cut = [e.chosen_tokens for e in data.val]
    chosen = [Example(list(e.input_ids[:k]), list(e.targets[:k]), e.source) for e, k in zip(data.val, cut)]
    rejected = [Example(list(e.input_ids[k:]), list(e.targets[k:]), e.source) for e, k in zip(data.val, cut)]
    held_out = {e.source for e in data.val}
    rows = read_pairs(config.data, **data_options(config))
    val_rows = read_pairs(config.eval, **data_options(config)) if config.eval else rows  # the file read once
    pairs = [([{"role": m.role, "content": m.content} for m in p.prompt], p.chosen[-1].content)
             for p in val_rows if p.source in held_out]
    random.Random(sizes.seed).shuffle(pairs)
    train = [p.chosen[-1].content for p in rows if p.source not in held_out]
    return TaskData(chosen, rejected, pairs[: sizes.generate], train)


def _base_task(view: Callable, tokenizer: Any, val: Sequence[Example], rejected: Sequence[Example],
               pairs: list[tuple[list[dict[str, str]], str]], sizes: TaskSizes,
               log: Callable[[str], None]) -> dict[str, Any]:
    """What the cache keeps of the base model on the task: per-example NLL sums and its answers."""
    log(f"task: base model on {len(val)} held-out examples and {len(pairs)} answers")
    with view() as base:
        nll = [-float(lp.sum()) for lp in target_logprobs(base, val)]
        rejected_nll = [-float(lp.sum()) for lp in target_logprobs(base, rejected)]
        answers = generate_answers(base, tokenizer, pairs, sizes) if pairs else []
    return {"nll": nll, "rejected_nll": rejected_nll, "answers": answers}


def task_metrics(model: Any, tokenizer: Any, config: TrainConfig, view: Callable, sizes: TaskSizes,
                 log: Callable[[str], None], use_cache: bool = True) -> dict[str, Any]:
    """Held-out loss and perplexity (every validation example), and generated-answer scores on a
    sample; for a preference run also which answer of each held-out pair each model prefers. The
    base model's side is read from the cache when an earlier eval of the same base, examples and
    sizes wrote it (`cached_base`). A GRPO run is measured by its grader instead (evaluate_reward.py)."""
    if config.objective == "grpo":
        return reward_task_metrics(model, tokenizer, config, view, log)
    data = task_examples(config, tokenizer, sizes)
    val, rejected, pairs = data.val, data.rejected, data.pairs
    base, cached = cached_base(config.model, tokenizer, task_fingerprint([*val, *rejected], pairs, sizes, model),
                               lambda: _base_task(view, tokenizer, val, rejected, pairs, sizes, log), use_cache)
    log(f"task: tuned model on {len(val)} held-out examples" + (" (the base's from the cache)" if cached else ""))
    tuned_lp = target_logprobs(model, val)
    weights = np.array([lp.size for lp in tuned_lp], float)
    base_nll = np.array(base["nll"])
    tuned_nll = np.array([-float(lp.sum()) for lp in tuned_lp])
    task: dict[str, Any] = {
        "n_examples": len(val),
        "loss": paired_summary(base_nll, tuned_nll, weights),
        "perplexity": paired_summary(base_nll, tuned_nll, weights, np.exp),
        "base_cached": cached,
    }
    if rejected:
        tuned_rejected = np.array([-float(lp.sum()) for lp in target_logprobs(model, rejected)])
        task.update(preference_scores(base_nll, np.array(base["rejected_nll"]), tuned_nll, tuned_rejected))
    task["n_generated"] = len(pairs)
    if not pairs:
        return task
    log(f"task: {len(pairs)} answers of the tuned model")
    base_text = base["answers"]
    tuned_text = generate_answers(model, tokenizer, pairs, sizes)
    ones = np.ones(len(pairs))
    for name, fn in (("exact_match", exact_match), ("token_f1", token_f1), ("rouge_l", rouge_l)):
        b = np.array([fn(p, ref) for p, (_, ref) in zip(base_text, pairs)])
        t = np.array([fn(p, ref) for p, (_, ref) in zip(tuned_text, pairs)])
        task[name] = paired_summary(b, t, ones)
    # The share of answers that loop (text_metrics.loops): a tuned model that repeats one phrase to
    # the token limit can still score some token F1, so it is counted on its own.
    task["looping"] = paired_summary(np.array([loops(t) for t in base_text], float),
                                     np.array([loops(t) for t in tuned_text], float), ones)
    # Whether an answer uses the training answers' house words (compare's style match, same rule).
    markers = style_markers(data.train_answers, general_texts())
    task["style_match"] = paired_summary(np.array([style_match(t, markers) for t in base_text]),
                                         np.array([style_match(t, markers) for t in tuned_text]), ones)
    task["style_markers"] = markers
    task["samples"] = [
        {"prompt": messages[-1]["content"], "reference": ref, "base": b, "tuned": t}
        for (messages, ref), b, t in list(zip(pairs, base_text, tuned_text))[:SAMPLES_SHOWN]
    ]
    return task


def preference_scores(base_chosen: np.ndarray, base_rejected: np.ndarray, tuned_chosen: np.ndarray,
                      tuned_rejected: np.ndarray) -> dict[str, Any]:
    """Per held-out pair, from each side's summed NLL: whether the model gives the chosen answer the
    higher log-likelihood (`preference_accuracy`), and by how much (`logp_margin`, nats), base vs
    tuned with paired intervals. The model's own preference, not DPO's implicit reward, which is
    zero for the base by definition."""
    ones = np.ones(len(base_chosen))
    return {"preference_accuracy": paired_summary((base_rejected > base_chosen).astype(float),
                                                  (tuned_rejected > tuned_chosen).astype(float), ones),
            "logp_margin": paired_summary(base_rejected - base_chosen, tuned_rejected - tuned_chosen, ones)}


def loss_sentence(task: dict[str, Any]) -> str:
    """The verdict's task sentence: held-out loss base -> tuned, the preference and answers' scores."""
    loss = task["loss"]
    change = loss["delta"] / loss["base"] if loss["base"] else 0.0
    learned = f"Task: held-out loss {loss['base']:.3f} -> {loss['tuned']:.3f} ({change:+.1%}"
    lo, hi = loss["ci95"]
    learned += f", 95% CI of change [{lo:+.3f}, {hi:+.3f}])"
    if "preference_accuracy" in task:
        acc = task["preference_accuracy"]
        learned += f"; prefers the chosen answer {acc['base']:.0%} -> {acc['tuned']:.0%} of held-out pairs"
    if "token_f1" in task:
        f1 = task["token_f1"]
        learned += f"; answer token F1 {f1['base']:.2f} -> {f1['tuned']:.2f}"
    if task.get("looping", {}).get("tuned"):
        n = task["n_generated"]
        looped, base_looped = round(task["looping"]["tuned"] * n), round(task["looping"]["base"] * n)
        learned += (f"; {looped} of {n} tuned answers loop (one phrase repeated over most of the answer; base "
                    f"{base_looped}): sample with repetition_penalty, or train fewer steps")
    return learned + "."


def verdict(task: dict[str, Any], ok: bool, checks: list[tuple[str, bool, str]],
            training: dict[str, Any] | None = None) -> str:
    """Three plain sentences: what improved, what was lost, whether it is within budget; a fourth when
    the probes that chose the model during training judged it otherwise (`training_verdict`)."""
    learned = reward_sentence(task) if "reward" in task else loss_sentence(task)
    worst = [text for _, good, text in checks if not good]
    if ok:
        lost = "General abilities: " + "; ".join(text for _, _, text in checks) + "."
        budget = "Within the forgetting budget."
    else:
        lost = "Lost: " + "; ".join(worst) + "."
        budget = "OVER the forgetting budget: lower the learning rate, train fewer steps, or turn on " \
                 "forgetting.replay_fraction / forgetting.kl_weight."
    lines = [learned, lost, budget]
    if training is not None and not training["agrees"]:
        lines.append(disagreement(training, ok))
    return "\n".join(lines)


def training_verdict(summary: dict[str, Any], ok: bool) -> dict[str, Any] | None:
    """What the fast probes during training said of the chosen step, and whether this report agrees;
    None when training measured no probes (or the run predates summary.json)."""
    within = summary.get("within_budget")
    if within is None:
        return None
    return {"step": summary.get("selected_step"), "within_budget": within, "probe_set": "train",
            "agrees": within == ok}


def disagreement(training: dict[str, Any], ok: bool) -> str:
    """The sentence that says the two probe sets disagree, and which one to believe."""
    said = "within" if training["within_budget"] else "over"
    if ok:
        return (f"Note: during training the fast probe set judged step {training['step']} {said} the budget; this "
                f"report's larger probe set finds it within: the fast set's few items are noisier.")
    return (f"Note: during training the fast probe set judged step {training['step']} {said} the budget; this "
            f"report's larger probe set finds it over: trust this report (the fast set has about a third "
            f"of its items), and lower the learning rate or turn on a mitigation before training again.")


def evaluate_run(run_path: str | Path, full: bool = False, log: Callable[[str], None] | None = None,
                 use_cache: bool = True, lm_eval_tasks: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate a finished run; write RUN/eval.json and RUN/report.html; return the eval.json content.

    lm_eval_tasks: optional lm-evaluation-harness task names (needs `pip install lm-eval` and a network).
    """
    from rich.console import Console

    from ..evaluation.report import write_report
    from ..training.trackers import log_evaluation

    log = log or (lambda message: None)
    started = time.perf_counter()
    run = RunDir.open(run_path)
    config = run.config()
    for path in config.forgetting.probes:  # a bad probe file fails now, not after minutes of scoring
        read_probe_file(path)
    if lm_eval_tasks:
        from ..forgetting.lm_eval_hook import require_lm_eval

        require_lm_eval()
    model, tokenizer, base_model, view = load_run_and_base(run.path)
    preset = "full" if full else "standard"
    task = task_metrics(model, tokenizer, config, view, TASK_SIZES[preset], log, use_cache)
    splits = None
    if config.retrieval is not None:  # a RAFT run: compare's found / missed / unanswerable splits, its own
        from .compare import raft_eval_splits

        sizes = TASK_SIZES[preset]
        splits = raft_eval_splits(run.path, model, tokenizer, view, config, sizes.generate, sizes.max_new_tokens, log,
                                  use_cache)
    general = measure_probes(model, tokenizer, config.model, preset, config.forgetting.probes, base_model,
                             use_cache=use_cache, log=log)
    if lm_eval_tasks:
        from ..forgetting.lm_eval_hook import lm_eval_scores

        log(f"lm-eval: {', '.join(lm_eval_tasks)}")
        lm_eval_results = lm_eval_scores(model, tokenizer, lm_eval_tasks, base_model=base_model)
    checks = budget_checks(config.forgetting.budget, general)
    ok = all(good for _, good, _ in checks)
    summary = run.summary()
    training = training_verdict(summary, ok) if summary is not None else None
    result = {
        "run": str(run.path),
        "model": config.model,
        "method": config.method,
        "probe_set": preset,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task,
        "general": general.to_dict(),
        "budget": asdict(config.forgetting.budget),
        "budget_checks": [{"probe": name, "ok": good, "text": text} for name, good, text in checks],
        "within_budget": ok,
        "training_verdict": training,
        "verdict": verdict(task, ok, checks, training),
        "base_cached": general.base_cached,
        "seconds": time.perf_counter() - started,
    }
    if splits is not None:
        result["splits"] = splits
    if lm_eval_tasks:
        result["lm_eval"] = lm_eval_results
    run.write_evaluation(result)
    write_report(run, result)
    log_evaluation(config, run.path, result, Console(stderr=True, soft_wrap=True))  # into the run's trackers
    return result


def print_verdict(result: dict[str, Any], run: str | Path, out: Any) -> None:
    """The evaluation for the terminal, on the rich Console `out`: within the budget or over it, the
    verdict's lines as written (not highlighted), where report.html is."""
    out.print()
    within = "within" if result["within_budget"] else "[red]OVER[/]"
    out.print(f"[bold]tunesmith eval: {within} the forgetting budget[/]")
    for line in result["verdict"].splitlines():
        out.print(f"  {line}", highlight=False)
    for line in split_lines(result.get("splits", {})):
        out.print(f"  {line}", highlight=False)
    out.print(f"  report            {Path(run) / 'report.html'}")


def split_lines(splits: dict[str, Any]) -> list[str]:
    """One line per split of a run trained with retrieval: tuned+RAG against base+RAG on token F1 and
    the split's rates (evaluation/handoff.py RATES), each with its 95% interval."""
    from ..evaluation.handoff import RATES

    def cell(split: dict[str, Any], system: str, metric: str) -> str:
        m = split["systems"][system][metric]
        return f"{m['value']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"

    return [f"{name} ({split['n']}): " + "; ".join(
        f"{metric} base+rag {cell(split, 'base+rag', metric)}, tuned+rag {cell(split, 'tuned+rag', metric)}"
        for metric in ("token_f1", *RATES[name])) for name, split in splits.items()]
