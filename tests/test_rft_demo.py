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
