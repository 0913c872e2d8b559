"""The grader routes of `tunesmith server` driven by the official openai client (graders/run and
graders/validate in OpenAI's shapes), python graders refused without --allow-python-graders and run
with it, score_model asking only the server's judge, the guard in front of the routes, and a
reinforcement job checked in full and then refused."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import httpx
import pytest

from conftest import faq_rows, write_jsonl
from test_graders import _Judge
from test_serve import running
from tunesmith.server.app import ServerSettings, build_server_app, load_base, open_home
from tunesmith.server.jobs import method_hyperparameters
from tunesmith.server.reinforcement import NOT_AVAILABLE, ReinforcementHyperparameters, reinforcement_hyperparameters
from tunesmith.web.errors import RequestError

KEY = "sk-graders-test"
CITY = {"type": "string_check", "name": "city", "input": "{{sample.output_text}}", "reference": "{{item.city}}",
        "operation": "ilike"}
LENGTH = {"type": "python", "name": "length",
          "source": "def grade(sample, item):\n    return len(sample['output_text']) / item['scale']"}
JUDGED = {"type": "score_model", "name": "judge", "model": "gpt-4.1-mini", "range": [0, 1],
          "input": [{"role": "user", "content": "Reference {{item.city}}. Answer: {{sample.output_text}}"}]}


@pytest.fixture(scope="module")
def judge():
    """A fake OpenAI-compatible judge: 0.9 for an answer with JSON in it, else 0 (test_graders._Judge)."""
    _Judge.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory, judge):
    """Two servers on one loaded base: {"plain": started without flags but --judge-url, "python": with
    --allow-python-graders} -> base url."""
    first = ServerSettings(tmp_path_factory.mktemp("home"), model=str(tiny_model_dir), api_key=KEY, evaluate=False,
                           judge_url=judge, judge_api_key="sk-judge")
    model, tokenizer, base_id, _ = load_base(first)
    second = ServerSettings(tmp_path_factory.mktemp("home"), model=str(tiny_model_dir), api_key=KEY, evaluate=False,
                            allow_python_graders=True)
    apps = {name: build_server_app(open_home(s.home), s, model, tokenizer, base_id)
            for name, s in (("plain", first), ("python", second))}
    with running(apps["plain"]) as (plain, _), running(apps["python"]) as (python, _):
        yield {"plain": plain, "python": python}


def client_of(url: str):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def test_the_official_client_validates_and_runs_graders(servers):
    client = client_of(servers["plain"])
    assert client.fine_tuning.alpha.graders.validate(grader=CITY).grader.type == "string_check"
    ran = client.fine_tuning.alpha.graders.run(grader=CITY, model_sample="It is PARIS.", item={"city": "paris"})
    assert ran.reward == 1.0 and ran.sub_rewards == {} and ran.metadata.name == "city"
    assert ran.metadata.type == "string_check" and not any(
        v for k, v in ran.metadata.errors.model_dump().items() if isinstance(v, bool))
    multi = {"type": "multi", "name": "both", "calculate_output": "0.25 * city + 0.75 * exact",
             "graders": {"city": CITY, "exact": {**CITY, "operation": "eq"}}}
    ran = client.fine_tuning.alpha.graders.run(grader=multi, model_sample="paris", item={"city": "Paris"})
    assert (ran.reward, ran.sub_rewards) == (0.25, {"city": 1.0, "exact": 0.0})
    missing = client.fine_tuning.alpha.graders.run(grader=CITY, model_sample="Paris", item={"town": "Paris"})
    assert missing.reward == 0.0 and missing.metadata.errors.invalid_variable_error
    assert "the row has no item.city" in missing.to_dict()["metadata"]["error_messages"][0]


def test_a_grader_that_does_not_parse_is_a_400_naming_its_path(servers):
    import openai

    client = client_of(servers["plain"])
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.alpha.graders.validate(grader={**CITY, "operation": "contains"})
    error = refused.value.body
    assert error["code"] == "invalid_grader" and "grader: $.operation: 'contains' is not one of" in error["message"]
    with pytest.raises(openai.BadRequestError, match="model_sample"):
        client.post("/fine_tuning/alpha/graders/run", body={"grader": CITY}, cast_to=object)


@pytest.mark.parametrize("grader", [LENGTH, {"type": "multi", "name": "m", "calculate_output": "city * length",
                                             "graders": {"city": CITY, "length": LENGTH}}])
def test_python_graders_are_refused_without_the_flag_and_run_with_it(servers, grader):
    import openai

    for call in ("run", "validate"):
        args = {"model_sample": "paris", "item": {"city": "paris", "scale": 10}} if call == "run" else {}
        with pytest.raises(openai.BadRequestError) as refused:
            getattr(client_of(servers["plain"]).fine_tuning.alpha.graders, call)(grader=grader, **args)
        assert refused.value.body["code"] == "python_graders_disabled"
        assert "--allow-python-graders" in refused.value.body["message"] and "'length'" in refused.value.body["message"]
    allowed = client_of(servers["python"]).fine_tuning.alpha.graders
    assert allowed.validate(grader=grader).grader.type == grader["type"]
    ran = allowed.run(grader=grader, model_sample="paris", item={"city": "paris", "scale": 10})
    assert ran.reward == 0.5  # len("paris") / 10, times city's 1.0 in the multi grader
    broken = allowed.run(grader=grader, model_sample="paris", item={"city": "paris", "scale": 0})
    assert broken.reward == 0.0 and broken.metadata.errors.python_grader_runtime_error
    assert "ZeroDivisionError" in broken.metadata.errors.python_grader_runtime_error_details


def test_score_model_asks_only_the_servers_judge(servers):
    import openai

    seen = len(_Judge.seen)
    ran = client_of(servers["plain"]).fine_tuning.alpha.graders.run(grader=JUDGED, model_sample="a JSON answer",
                                                                     item={"city": "Paris"})
    assert ran.reward == 0.9 and len(_Judge.seen) == seen + 1
    body, auth = _Judge.seen[-1]
    assert auth == "Bearer sk-judge" and body["messages"][0]["content"] == "Reference Paris. Answer: a JSON answer"
    for smuggled in ("url", "base_url", "api_base"):  # a grader object has no field for another judge
        with pytest.raises(openai.BadRequestError, match=f"\\$.{smuggled}: is not a field"):
            client_of(servers["plain"]).fine_tuning.alpha.graders.run(
                grader={**JUDGED, smuggled: "http://127.0.0.1:9/v1"}, model_sample="JSON")
    assert len(_Judge.seen) == seen + 1
    without = client_of(servers["python"]).fine_tuning.alpha.graders.run(grader=JUDGED, model_sample="JSON",
                                                                         item={"city": "Paris"})
    assert without.reward == 0.0 and without.metadata.errors.model_grader_server_error
    assert "--judge-url" in without.metadata.errors.model_grader_server_error_details


def test_the_guard_refuses_a_cross_origin_or_keyless_grader_run(servers):
    url = servers["python"] + "/v1/fine_tuning/alpha/graders/run"
    body = {"grader": LENGTH, "model_sample": "x", "item": {"scale": 1}}
    auth = {"Authorization": f"Bearer {KEY}"}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "http://evil.example", **auth},
                    {"Sec-Fetch-Site": "cross-site", **auth}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin", r.text
    r = httpx.post(url, json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(url, content=httpx.Request("POST", url, json=body).content,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"})
    assert r.status_code == 415


def test_a_reinforcement_job_is_checked_then_refused(servers, tmp_path):
    import openai

    client = client_of(servers["plain"])
    rows = [{"messages": row["messages"][:1], "city": "Paris"} for row in faq_rows("chat")]
    upload = client.files.create(file=write_jsonl(tmp_path / "rft.jsonl", rows).open("rb"), purpose="fine-tune")

    def create(grader, hyperparameters=None, **extra):
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(model="tiny-model0", training_file=upload.id, method={
                "type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyperparameters or {},
                                                           **extra}})
        return refused.value.body

    refused = create(CITY, {"n_epochs": 2, "eval_samples": 4, "compute_multiplier": 1.5, "reasoning_effort": "low"})
    assert refused["code"] == "reinforcement_not_available" and NOT_AVAILABLE in refused["message"]
    assert create(LENGTH)["code"] == "python_graders_disabled"
    assert create({**CITY, "operation": "x"})["param"] == "method.reinforcement.grader"
    assert create(CITY, {"eval_interval": 0})["param"] == "method.reinforcement.hyperparameters.eval_interval"
    assert create(CITY, {"reasoning_effort": "max"})["param"] == "method.reinforcement.hyperparameters.reasoning_effort"
    assert create(None)["param"] == "method.reinforcement.grader"
    assert client.fine_tuning.jobs.list().data == []  # nothing stored


def test_reinforcement_hyperparameters_map_openais_fields():
    given = reinforcement_hyperparameters({"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2,
                                           "reasoning_effort": "default"})
    assert given == ReinforcementHyperparameters(n_epochs=3, learning_rate_multiplier=2.0)
    assert given.to_dict() == {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2.0,
                               "eval_interval": "auto", "eval_samples": "auto", "compute_multiplier": "auto",
                               "reasoning_effort": "default"}
    assert method_hyperparameters({"method": {"type": "reinforcement", "reinforcement": {
        "grader": CITY, "hyperparameters": {"eval_interval": 5, "compute_multiplier": 1.0}}}}) == (
        "reinforcement", {"eval_interval": 5, "compute_multiplier": 1.0})
    with pytest.raises(RequestError, match="'beta' is not supported by method 'reinforcement'"):
        reinforcement_hyperparameters({"beta": 0.1})
    assert set(ReinforcementHyperparameters.IGNORED) == {"compute_multiplier", "reasoning_effort"}
