"""The RFT demo's data and grader (examples/rft-demo): every FAQ row becomes a reinforcement row with
the fields the grader reads, the FAQ's own answers score 1, and a wrong team, a wrong source and a
non-JSON answer score what the grader's formula says."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tunesmith.graders import check_rows, grade, load_grader, make_sample

DEMO = Path(__file__).resolve().parents[1] / "examples" / "rft-demo"


@pytest.fixture(scope="module")
def built():
    spec = importlib.util.spec_from_file_location("rft_build", DEMO / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(module.faq_rows())


def test_every_faq_row_is_a_prompt_ending_in_a_user_turn_with_the_graders_fields(built):
    prompts, answers = built
    assert len(prompts) == len(answers) == 497  # the FAQ's 503 rows, its 6 repeated questions once
    assert all(row["messages"][-1]["role"] == "user" for row in prompts)
    assert all(json.loads(row["messages"][-1]["content"]) == {"team": row["team"], "source": row["source"]}
               for row in answers)
    grader = load_grader(DEMO / "grader.json")
    assert check_rows(grader, [("prompts.jsonl", i, row) for i, row in enumerate(prompts, 1)]) == []


def test_the_faq_answers_score_one_and_wrong_ones_what_the_formula_says(built):
    grader = load_grader(DEMO / "grader.json")
    _, answers = built
    row = answers[0]  # bygglov, "PBL 9 kap."
    assert all(grade(grader, make_sample(a["messages"][-1]["content"]), a).reward == 1.0 for a in answers[:40])
    wrong_team = grade(grader, make_sample(json.dumps({"team": "vvs", "source": row["source"]})), row)
    assert wrong_team.reward == pytest.approx(0.4) and wrong_team.sub_scores["team"] == 0.0
    prose = grade(grader, make_sample(f"The {row['team']} team; see {row['source']}."), row)
    assert prose.reward == 0.0 and prose.sub_scores["shape"] == 0.0


def test_the_sft_and_grpo_stages_hold_out_the_same_questions(built, tmp_path, tiny_tokenizer):
    """The demo compares base, SFT and GRPO on questions neither run trained on: sft.yaml (answers) and
    grpo.yaml (prompts) split the same rows alike, which its report checks before it measures."""
    import yaml

    from tunesmith import load_config

    spec = importlib.util.spec_from_file_location("rft_report", DEMO / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    prompts, answers = built
    configs = {}
    for name, rows in (("sft", answers), ("grpo", prompts)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        settings = yaml.safe_load((DEMO / f"{name}.yaml").read_text())
        settings.update(data=str(tmp_path / f"{name}.jsonl"), init_from=None)
        if "grader" in settings:
            settings["grader"] = str(DEMO / "grader.json")
        configs[name] = load_config(None, {k: v for k, v in settings.items() if v is not None})

    class Run:
        def __init__(self, config):
            self.config = lambda: config

    report.same_questions(Run(configs["sft"]), Run(configs["grpo"]), tiny_tokenizer)  # raises when they differ
    assert configs["grpo"].grpo.group_size == 8 and configs["grpo"].objective == "grpo"
