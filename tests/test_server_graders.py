"""The grader routes of `tunesmith server` driven by the official openai client (graders/run and
graders/validate in OpenAI's shapes), python graders refused without --allow-python-graders and run
with it, score_model asking only the server's judge, the guard in front of the routes; and reinforcement
jobs: trained by GRPO on the tiny model with their events and checkpoints, rows lacking the grader's
field failed in validation, bad requests refused naming the field, python graders only with the flag."""

from __future__ import annotations

import json
import re
import threading
from http.server import ThreadingHTTPServer

import httpx
import pytest
import yaml

from conftest import FAQ, write_jsonl
from test_graders import _Judge
from test_serve import running
from test_server import BASE_CONFIG, LIMITS, finished, wait_for
from tunesmith.config import TrainConfig, default_lr
from tunesmith.server.app import ServerSettings, build_server_app, load_base, open_home
from tunesmith.server.jobs import method_hyperparameters, train_overrides
from tunesmith.server.reinforcement import (
    ReinforcementHyperparameters,
    python_grader_refusal,
    reinforcement_hyperparameters,
)
from tunesmith.server.store import DB_NAME, Store
from tunesmith.web.errors import RequestError

KEY = "sk-graders-test"
CITY = {"type": "string_check", "name": "city", "input": "{{sample.output_text}}", "reference": "{{item.city}}",
        "operation": "ilike"}
LENGTH = {"type": "python", "name": "length",
          "source": "def grade(sample, item):\n    return len(sample['output_text']) / item['scale']"}
SIMILAR = {"type": "text_similarity", "name": "close", "evaluation_metric": "fuzzy_match",
           "input": "{{sample.output_text}}", "reference": "{{item.city}}"}
"""A reward that varies between the tiny model's random answers (a string_check would be 0 for all)."""
RFT_CONFIG = {**BASE_CONFIG, "grpo": {"group_size": 2, "max_completion_tokens": 4}}
"""The servers' --config: GRPO's group and answer length kept small, for reinforcement jobs only."""
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
    --allow-python-graders} -> base url, and "homes": their --home folders."""
    config = tmp_path_factory.mktemp("config") / "base.yaml"
    config.write_text(json.dumps(RFT_CONFIG))
    first = ServerSettings(tmp_path_factory.mktemp("home"), model=str(tiny_model_dir), config=config, api_key=KEY,
                           evaluate=False, judge_url=judge, judge_api_key="sk-judge", limits=LIMITS)
    model, tokenizer, base_id, _ = load_base(first)
    second = ServerSettings(tmp_path_factory.mktemp("home"), model=str(tiny_model_dir), config=config, api_key=KEY,
                            evaluate=False, allow_python_graders=True, limits=LIMITS)
    apps = {name: build_server_app(open_home(s.home), s, model, tokenizer, base_id)
            for name, s in (("plain", first), ("python", second))}
    with running(apps["plain"]) as (plain, _), running(apps["python"]) as (python, _):
        yield {"plain": plain, "python": python, "homes": {"plain": first.home, "python": second.home}}


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
    job = {"model": "tiny-model0", "training_file": "file-" + "0" * 24,
           "method": {"type": "reinforcement", "reinforcement": {"grader": LENGTH}}}
    r = httpx.post(servers["python"] + "/v1/fine_tuning/jobs", json=job,
                   headers={"Origin": "http://evil.example", "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"  # a reinforcement job too
    r = httpx.post(url, content=httpx.Request("POST", url, json=body).content,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"})
    assert r.status_code == 415


def rft_upload(client, tmp_path, rows=None):
    """OpenAI's RFT rows (messages ending with the user's turn, the field the grader reads), uploaded."""
    rows = rows or [{"messages": [{"role": "user", "content": f"{q} [{k}]"}], "city": "Paris"}
                    for k in range(2) for q, _ in FAQ]
    return client.files.create(file=write_jsonl(tmp_path / "rft.jsonl", rows).open("rb"), purpose="fine-tune")


def test_a_reinforcement_job_trains_grpo_with_its_grader(servers, tmp_path):
    client = client_of(servers["plain"])
    upload = rft_upload(client, tmp_path)
    hyperparameters = {"n_epochs": 1, "batch_size": 6, "eval_interval": 2, "eval_samples": 4,
                       "compute_multiplier": 1.5, "reasoning_effort": "low"}
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=upload.id, suffix="rft", method={
        "type": "reinforcement", "reinforcement": {"grader": SIMILAR, "hyperparameters": hyperparameters}})
    assert job.status == "validating_files" and job.method.type == "reinforcement"
    assert job.method.reinforcement.grader.to_dict() == SIMILAR
    assert job.method.reinforcement.hyperparameters.to_dict() == {**hyperparameters, "learning_rate_multiplier": "auto"}
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.learning_rate_multiplier == "auto"
    done = wait_for(lambda: finished(client, job.id), timeout=300)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny-model0:rft:{job.id}"
    config = yaml.safe_load((servers["homes"]["plain"] / "runs" / job.id / "config.yaml").read_text())
    # 18 prompts train (2 of 20 held out), 6 a step: 3 steps; evaluated at 0, 2 and the last.
    assert (config["objective"], config["grader"], config["eval_every"], config["epochs"], config["batch_size"]) == (
        "grpo", SIMILAR, 2, 1.0, 6)
    assert config["grpo"]["group_size"] == 2 and config["lr"] == pytest.approx(default_lr("lora", "grpo"))
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)][::-1]
    steps = [m for m in messages if re.match(r"Step \d/3: training loss=\S+, sampled reward=", m)]
    rewards = [m for m in messages if re.match(r"Step \d: held-out reward=\S+ \(sampled \S+\)", m)]
    assert len(steps) == 3 and [m.split(":")[0] for m in rewards] == ["Step 0", "Step 2", "Step 3"], messages
    assert any(m.startswith("Training finished: held-out reward ") for m in messages), messages
    metrics = [json.loads(line) for line in
               (servers["homes"]["plain"] / "runs" / job.id / "metrics.jsonl").read_text().splitlines()]
    evaluation = next(e for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
                      if e.message.startswith("Step 2: held-out"))
    assert evaluation.data["reward"] == next(r["reward"] for r in metrics if r["step"] == 2 and "val_loss" in r)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [3, 2] and checkpoints[1].metrics.valid_loss == -evaluation.data[
        "reward"]
    assert [client.files.retrieve(f).filename for f in done.result_files] == ["step_metrics.csv"]
    reply = client.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=4)
    assert reply.model == done.fine_tuned_model  # the GRPO job's adapter answers by its name


def test_a_reinforcement_job_whose_rows_lack_a_grader_field_fails_validation_naming_the_line(servers, tmp_path):
    client = client_of(servers["plain"])
    rows = [{"messages": [{"role": "user", "content": q}], "city": "Paris"} for q, _ in FAQ]
    del rows[2]["city"]
    upload = rft_upload(client, tmp_path, rows)
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=upload.id, method={
        "type": "reinforcement", "reinforcement": {"grader": CITY}})
    done = wait_for(lambda: finished(client, job.id))
    assert done.status == "failed" and done.error.code == "invalid_training_file"
    assert f"{upload.id}:3: item.city: grader 'city' reads {{{{item.city}}}}" in done.error.message, done.error.message


def test_bad_reinforcement_requests_are_400s_naming_the_field(servers, tmp_path):
    import openai

    client = client_of(servers["plain"])
    upload = rft_upload(client, tmp_path)
    before = len(client.fine_tuning.jobs.list().data)

    def create(grader, hyperparameters=None, **extra):
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(model="tiny-model0", training_file=upload.id, method={
                "type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyperparameters or {},
                                                           **extra}})
        return refused.value.body

    refused = create(LENGTH)
    assert refused["code"] == "python_graders_disabled" and "--allow-python-graders" in refused["message"]
    assert create({**CITY, "operation": "x"})["param"] == "method.reinforcement.grader"
    assert create(CITY, {"eval_interval": 0})["param"] == "method.reinforcement.hyperparameters.eval_interval"
    assert create(CITY, {"reasoning_effort": "max"})["param"] == "method.reinforcement.hyperparameters.reasoning_effort"
    assert create(CITY, {"beta": 0.1})["param"] == "method.reinforcement.hyperparameters.beta"
    assert create(CITY, tools=[])["param"] == "method.reinforcement.tools"
    assert create(None)["param"] == "method.reinforcement.grader"
    assert len(client.fine_tuning.jobs.list().data) == before  # nothing stored


def test_a_score_model_job_trains_with_the_servers_judge_and_is_refused_without_one(servers, tmp_path):
    import openai

    judged = {"type": "multi", "name": "m", "calculate_output": "judge", "graders": {"judge": JUDGED}}
    without = client_of(servers["python"])  # started without --judge-url
    with pytest.raises(openai.BadRequestError) as refused:
        without.fine_tuning.jobs.create(model="tiny-model0", training_file=rft_upload(without, tmp_path).id,
                                        method={"type": "reinforcement", "reinforcement": {"grader": judged}})
    assert refused.value.body["param"] == "method.reinforcement.grader"
    assert "'judge' needs a judge" in refused.value.body["message"] and "--judge-url" in refused.value.body["message"]
    client, seen = client_of(servers["plain"]), len(_Judge.seen)
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=rft_upload(client, tmp_path).id, method={
        "type": "reinforcement", "reinforcement": {"grader": judged, "hyperparameters": {"n_epochs": 1,
                                                                                         "batch_size": 18}}})
    done = wait_for(lambda: finished(client, job.id), timeout=300)
    assert done.status == "succeeded", done.error
    asked = _Judge.seen[seen:]  # 18 prompts x 2 samples, and the 2 held-out prompts greedy and sampled, twice
    assert len(asked) == 18 * 2 + 2 * (2 + 2) and {auth for _, auth in asked} == {"Bearer sk-judge"}
    run = servers["homes"]["plain"] / "runs" / job.id
    assert yaml.safe_load((run / "config.yaml").read_text())["grpo"]["judge_url"].endswith("/v1")
    assert "sk-judge" not in (run / "config.yaml").read_text()  # the key reaches the worker, not the run's files


def test_a_python_grader_job_is_accepted_with_the_flag_and_refused_by_a_server_without_it(servers, tmp_path):
    client = client_of(servers["python"])
    rows = [{"messages": [{"role": "user", "content": q}], "city": "Paris", "scale": 10} for q, _ in FAQ]
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=rft_upload(client, tmp_path, rows).id,
                                         method={"type": "reinforcement", "reinforcement": {
                                             "grader": LENGTH, "hyperparameters": {"n_epochs": 1, "batch_size": 9}}})
    assert job.method.reinforcement.grader.type == "python"
    done = wait_for(lambda: finished(client, job.id), timeout=300)  # graded in the sandbox's processes
    assert done.status == "succeeded", done.error
    steps = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if "total_steps" in (e.data or {})]
    assert steps and all(0 < s["reward"] for s in steps)  # len(answer) / 10: a python reward reached training
    stored = Store(servers["homes"]["python"] / DB_NAME).job(job.id)["config"]["train"]
    assert stored["objective"] == "grpo" and stored["grader"] == LENGTH
    assert python_grader_refusal(stored, allow_python=True) is None
    refused = python_grader_refusal(stored, allow_python=False)  # a restart without the flag: queued, then failed
    assert refused["code"] == "python_graders_disabled" and "'length'" in refused["message"]
    assert python_grader_refusal({**stored, "grader": CITY}, allow_python=False) is None


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
    assert set(ReinforcementHyperparameters.IGNORED) == {"eval_samples", "compute_multiplier", "reasoning_effort"}
    overrides = train_overrides({"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 2.0, "eval_interval": 5,
                                 "eval_samples": 8, "compute_multiplier": 2.0, "reasoning_effort": "high"},
                                TrainConfig(data="x"), "reinforcement", CITY)
    assert overrides == {"objective": "grpo", "grader": CITY, "eval_every": 5, "epochs": 3.0, "max_steps": None,
                         "batch_size": 4, "lr": 2.0 * default_lr("lora", "grpo")}
