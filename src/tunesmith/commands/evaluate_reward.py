"""`tunesmith eval` of a GRPO run (objective grpo): the held-out prompts answered greedily by the base
and by the tuned model, both graded by the run's own grader (its config holds it inline), and the
mean reward and each sub-grader's mean compared base -> tuned with paired 95% intervals."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..config import TrainConfig
from ..data import data_options
from ..data.prompts import prepare_prompts
from ..data.render import end_of_turn_ids, pad_id
from ..evaluation.bootstrap import paired_summary
from ..graders import GradeResult, GradingSession, configured_judge, make_sample, parse_grader
from ..inference.decode import adapters_merged, generate_batch

SAMPLES_SHOWN = 5
"""Answers quoted in eval.json and the report, base beside tuned (as for the other objectives)."""


def held_out_prompts(config: TrainConfig, tokenizer: Any) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """The run's held-out prompts (token ids) and their rows, split as training split them."""
    data = prepare_prompts(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction,
                           config.seed, **data_options(config))
    return [list(e.input_ids) for e in data.val], [data.items.get(e.source, {}) for e in data.val]


def greedy_answers(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy answers, as training's held-out evaluation decodes them (special tokens dropped, unstripped:
    the grader sees what training rewarded)."""
    with adapters_merged(model) as decoding:
        out = generate_batch(decoding, prompts, max_new_tokens, sorted(end_of_turn_ids(tokenizer)), pad_id(tokenizer))
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in out]


def reward_task_metrics(model: Any, tokenizer: Any, config: TrainConfig, view: Callable,
                        log: Callable[[str], None]) -> dict[str, Any]:
    """The task section of eval.json for a GRPO run: `reward` and `sub_scores` (each base, tuned,
    delta, ci95, n), the rows whose grading failed on either side, and a few answers side by side."""
    prompts, rows = held_out_prompts(config, tokenizer)
    max_new_tokens = config.grpo.max_completion_tokens
    log(f"task: base and tuned answers to {len(prompts)} held-out prompts, graded")
    with view() as base:
        base_text = greedy_answers(base, tokenizer, prompts, max_new_tokens)
    tuned_text = greedy_answers(model, tokenizer, prompts, max_new_tokens)
    judge = configured_judge(config.grpo.judge_url, config.grpo.judge_model)
    with GradingSession(parse_grader(config.grader, "the run's grader"), judge) as session:
        base_grades = session.grade_many((make_sample(t), row) for t, row in zip(base_text, rows))
        tuned_grades = session.grade_many((make_sample(t), row) for t, row in zip(tuned_text, rows))
    ones = np.ones(len(prompts))

    def compare(score: Callable[[GradeResult], float]) -> dict[str, Any]:
        return paired_summary(np.array([score(g) for g in base_grades]), np.array([score(g) for g in tuned_grades]),
                              ones)

    keys = list(dict.fromkeys(k for g in (*base_grades, *tuned_grades) for k in g.sub_scores))
    return {
        "n_examples": len(prompts), "n_generated": len(prompts),
        "reward": compare(lambda g: g.reward),
        "sub_scores": {k: compare(lambda g, k=k: g.sub_scores.get(k, 0.0)) for k in keys},
        "rows_with_errors": {"base": sum(1 for g in base_grades if g.errors),
                             "tuned": sum(1 for g in tuned_grades if g.errors)},
        "samples": [{"prompt": tokenizer.decode(p, skip_special_tokens=True), "reference": "", "base": b, "tuned": t}
                    for p, b, t in list(zip(prompts, base_text, tuned_text))[:SAMPLES_SHOWN]],
    }


def reward_sentence(task: dict[str, Any]) -> str:
    """The verdict's task sentence for a GRPO run: the held-out reward base -> tuned, its interval, the
    sub-scores."""
    reward = task["reward"]
    lo, hi = reward["ci95"]
    text = (f"Task: held-out reward {reward['base']:.3f} -> {reward['tuned']:.3f} (95% CI of change "
            f"[{lo:+.3f}, {hi:+.3f}], {reward['n']} prompts)")
    for key, score in task.get("sub_scores", {}).items():
        text += f"; {key} {score['base']:.3f} -> {score['tuned']:.3f}"
    return text + "."
