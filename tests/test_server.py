"""`tunesmith server` driven by the official openai client on the tiny model: files, jobs queued in
order, events, checkpoints, chat with each tuned model by name on one base, cancel, a bad file failing
in validating_files, the guards' refusals, and a kill -9 of the server mid-job that resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from conftest import FAQ, faq_rows, write_jsonl
from test_serve import free_port, running
from tunesmith.cli import main
from tunesmith.commands.generate import generate
from tunesmith.run import load_run
from tunesmith.server.app import ServerSettings, build_server_app, load_base, open_home
from tunesmith.server.jobs import method_hyperparameters
from tunesmith.server.locks import HomeInUse
from tunesmith.server.store import DB_NAME, Store
from tunesmith.server.worker import JobEvents
from tunesmith.settings import ServeLimits, ServerLimits
from tunesmith.training.events import CheckpointEvent, EvaluationEvent, FinishedEvent, ProbesEvent, StepEvent

KEY = "sk-server-test"
MESSAGES = [{"role": "user", "content": "What is a building permit?"}]
# fp32 on the CPU is deterministic: a resumed job's steps have bit-for-bit the losses of an uninterrupted one.
BASE_CONFIG = {"precision": "fp32", "forgetting": {"measure_during_training": False}}
LONG_JOB = {"n_epochs": 20, "batch_size": 3}
"""60 steps of 3 examples (9 training rows), checkpoints every 15: room to kill the server mid-job."""
LIMITS = ServerLimits(max_upload_bytes=40_000, poll_s=0.05, max_queued_jobs=4)
SERVE_LIMITS = ServeLimits(max_body_bytes=20_000, max_tokens=48, default_max_tokens=12)


def wait_for(predicate, timeout=120.0, every=0.05):
    deadline = time.time() + timeout
    while not (value := predicate()):
        assert time.time() < deadline, "timed out"
        time.sleep(every)
    return value


@pytest.fixture(scope="module", autouse=True)
def one_thread_workers():
    """Workers and the killed server are processes of their own: one thread each trains the 2-layer
    model as fast as two, without two cores' spin-waiting beside the test's own process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("server-config") / "base.yaml"
    path.write_text(json.dumps(BASE_CONFIG))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def server(tiny_model_dir, base_config, tmp_path_factory):
    """The server in a thread: (base url, app state's served models, home)."""
    home = tmp_path_factory.mktemp("server-home")
    settings = ServerSettings(home, model=str(tiny_model_dir), config=base_config, api_key=KEY, evaluate=False,
                              limits=LIMITS, serve_limits=SERVE_LIMITS)
    opened = open_home(home)
    model, tokenizer, base_id, system_prompt = load_base(settings)
    app = build_server_app(opened, settings, model, tokenizer, base_id, system_prompt)
    with running(app) as (url, _):
        yield url, app.app.state.served, home


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def faq_upload(client, tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("upload") / "faq.jsonl", faq_rows("chat"))
    return client.files.create(file=path.open("rb"), purpose="fine-tune")


def finished(client, job_id):
    job = client.fine_tuning.jobs.retrieve(job_id)
    return job if job.status in ("succeeded", "failed", "cancelled") else None


def step_losses(client, job_id):
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=50))  # auto-paged with `after`
    return {e.data["step"]: e.data["train_loss"] for e in events if e.message.startswith("Step ") and
            "train_loss" in (e.data or {})}


@pytest.fixture(scope="module")
def two_jobs(client, faq_upload, server):
    """A short job and a long one created together; the statuses seen while they ran."""
    short = client.fine_tuning.jobs.create(model="tiny-model0", training_file=faq_upload.id, suffix="short",
                                           method={"type": "supervised", "supervised": {"hyperparameters": {
                                               "n_epochs": 1, "batch_size": 3}}})
    long = client.fine_tuning.jobs.create(model="tiny-model0", training_file=faq_upload.id, suffix="long",
                                          hyperparameters=LONG_JOB, seed=0)
    seen = set()

    def both_done():
        seen.add((client.fine_tuning.jobs.retrieve(short.id).status, client.fine_tuning.jobs.retrieve(long.id).status))
        return finished(client, short.id) and finished(client, long.id)

    wait_for(both_done)
    return client.fine_tuning.jobs.retrieve(short.id), client.fine_tuning.jobs.retrieve(long.id), seen


def test_files_upload_list_content_delete(client, faq_upload, tmp_path):
    assert faq_upload.id.startswith("file-") and faq_upload.purpose == "fine-tune"
    assert faq_upload.filename == "faq.jsonl"
    assert faq_upload.bytes == len("".join(json.dumps(r) + "\n" for r in faq_rows("chat")))
    assert faq_upload.id in [f.id for f in client.files.list()]
    assert client.files.retrieve(faq_upload.id).bytes == faq_upload.bytes
    assert client.files.content(faq_upload.id).text.splitlines()[0] == json.dumps(faq_rows("chat")[0])
    spare = client.files.create(file=("spare.jsonl", b'{"text": "x"}\n'), purpose="fine-tune")
    assert client.files.delete(spare.id).deleted
    assert spare.id not in [f.id for f in client.files.list()]


def test_jobs_queue_in_order_report_events_and_checkpoints(client, two_jobs, server):
    short, long, seen = two_jobs
    assert short.status == long.status == "succeeded", (short.error, long.error)
    # One job at a time, in creation order: the long job waited while the short one ran, never the reverse.
    assert ("running", "queued") in seen
    assert not {("queued", "running"), ("running", "running")} & seen
    assert short.fine_tuned_model == f"ft:tiny-model0:short:{short.id}"
    assert short.hyperparameters.n_epochs == 1 and long.hyperparameters.learning_rate_multiplier == "auto"
    summary = json.loads((server[2] / "runs" / short.id / "summary.json").read_text())
    assert short.trained_tokens == summary["train_tokens"] and summary["steps"] == 3
    losses = step_losses(client, short.id)
    metrics = [json.loads(line) for line in (server[2] / "runs" / short.id / "metrics.jsonl").read_text().splitlines()]
    assert losses == {r["step"]: r["loss"] for r in metrics if "loss" in r} and sorted(losses) == [1, 2, 3]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(short.id, limit=100)][::-1]
    order = ["Created fine-tuning job", "Validating training file", "Files validated", "Fine-tuning job started",
             "Step 1/3", "Training finished", "The job succeeded"]
    found = [next(i for i, m in enumerate(messages) if m.startswith(o)) for o in order]
    assert found == sorted(found), messages
    assert any(m.startswith("Step 3: validation loss=") for m in messages)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(short.id).data
    assert [c.step_number for c in checkpoints] == [3, 2, 1]  # newest first, one per evaluation
    assert checkpoints[0].metrics.train_loss == losses[3]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{short.fine_tuned_model}:ckpt-step-3"
    result = client.files.retrieve(short.result_files[0])
    assert result.purpose == "fine-tune-results" and result.filename == "step_metrics.csv"
    assert client.files.content(result.id).text.splitlines()[:2] == ["step,train_loss,valid_loss",
                                                                     f"0,,{metrics[0]['val_loss']}"]


def test_jobs_list_pages_newest_first(client, two_jobs):
    short, long, _ = two_jobs
    first = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in first.data] == [long.id] and first.has_more
    assert client.fine_tuning.jobs.list(limit=1, after=long.id).data[0].id == short.id
    events = client.fine_tuning.jobs.list_events(long.id, limit=5)
    after = client.fine_tuning.jobs.list_events(long.id, limit=5, after=events.data[-1].id)
    assert events.has_more and len(events.data) == len(after.data) == 5
    assert not {e.id for e in events.data} & {e.id for e in after.data}


def test_chat_with_each_tuned_model_by_name_on_one_base(client, two_jobs, server, tiny_model_dir):
    short, long, _ = two_jobs
    served = server[1]
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny-model0", short.fine_tuned_model, long.fine_tuned_model]
    for job in (short, long, short):  # switching back and forth answers as each run's own model
        reply = client.chat.completions.create(model=job.fine_tuned_model, messages=MESSAGES, max_tokens=12)
        model, tokenizer = load_run(server[2] / "runs" / job.id)
        assert reply.choices[0].message.content == generate(model, tokenizer, MESSAGES, max_new_tokens=12)
    from tunesmith.model.loading import load_model

    base = load_model(str(tiny_model_dir)).eval()
    reply = client.chat.completions.create(model="tiny-model0", messages=MESSAGES, max_tokens=12)
    assert reply.choices[0].message.content == generate(base, served.tokenizer, MESSAGES, max_new_tokens=12)
    # One copy of the base: both adapters live in the same base layers, whose weights are the base's
    # own tensors, counted once.
    assert sorted(served.model.peft_config) == sorted([short.id, long.id])
    base_weights = {n: p for n, p in served.model.named_parameters() if "lora_" not in n}
    assert sum(p.numel() for p in base_weights.values()) == sum(p.numel() for p in base.parameters())
    assert len({p.data_ptr() for p in base_weights.values()}) == len(list(base.parameters()))


def test_a_bad_file_fails_in_validating_files_naming_its_line(client, tmp_path):
    rows = faq_rows("chat")
    rows[2] = {"messages": [{"role": "user", "content": FAQ[2][0]}, {"role": "assistant", "content": ""}]}
    bad = client.files.create(file=write_jsonl(tmp_path / "bad.jsonl", rows).open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=bad.id)
    job = wait_for(lambda: finished(client, job.id))
    assert job.status == "failed" and job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert f"{bad.id}:3: messages[1].content:" in job.error.message, job.error.message
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert not any(m.startswith("Fine-tuning job started") for m in messages)


def test_cancel_stops_a_running_job_with_a_checkpoint(client, faq_upload, two_jobs):
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=faq_upload.id,
                                         hyperparameters={"n_epochs": 200, "batch_size": 3})
    wait_for(lambda: step_losses(client, job.id))
    assert client.fine_tuning.jobs.cancel(job.id).id == job.id
    job = wait_for(lambda: finished(client, job.id))
    assert job.status == "cancelled" and job.fine_tuned_model is None
    stop = next(e for e in client.fine_tuning.jobs.list_events(job.id) if e.message.startswith("SIGTERM: stopped"))
    assert stop.data["step"] in [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
    assert job.id not in [m.id for m in client.models.list()]
    queued = client.fine_tuning.jobs.create(model="tiny-model0", training_file=faq_upload.id)
    client.fine_tuning.jobs.cancel(queued.id)  # not started: cancelled at once
    assert client.fine_tuning.jobs.retrieve(queued.id).status == "cancelled"


@pytest.mark.parametrize("body, status, param", [
    ({"model": "gpt-4o-mini", "training_file": "file-x"}, 400, "model"),
    ({"model": "tiny-model0", "training_file": "file-000000000000000000000000"}, 400, "training_file"),
    ({"model": "tiny-model0", "training_file": "../../tunesmith.db"}, 400, "training_file"),
    ({"model": "tiny-model0", "training_file": "f", "method": {"type": "ppo"}}, 400, "method.type"),
    ({"model": "tiny-model0", "training_file": "f", "hyperparameters": {"n_epochs": 0}}, 400,
     "hyperparameters.n_epochs"),
    ({"model": "tiny-model0", "training_file": "f", "hyperparameters": {"beta": 1}}, 400, "hyperparameters.beta"),
    ({"model": "tiny-model0", "training_file": "f", "suffix": "a/b"}, 400, "suffix"),
])
def test_bad_job_requests_get_openai_errors(server, body, status, param):
    r = httpx.post(server[0] + "/v1/fine_tuning/jobs", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text


def test_method_maps_supervised_and_dpo():
    assert method_hyperparameters({"method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}}}}) == (
        "supervised", {"n_epochs": 2, "learning_rate_multiplier": 0.5})
    assert method_hyperparameters({"hyperparameters": {"batch_size": 4}}) == ("supervised", {"batch_size": 4})
    assert method_hyperparameters({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}}) == (
        "dpo", {"beta": 0.2})
    from tunesmith.config import TrainConfig, default_lr
    from tunesmith.server.jobs import train_overrides
    from tunesmith.web.errors import RequestError

    overrides = train_overrides({"beta": 0.2, "learning_rate_multiplier": 2}, TrainConfig(data="x"), "dpo")
    assert overrides["objective"] == "dpo" and overrides["preference"].beta == 0.2
    assert overrides["lr"] == 2 * default_lr("lora", "dpo")
    with pytest.raises(RequestError, match="'beta' is not supported by method 'supervised'"):
        method_hyperparameters({"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}})
    with pytest.raises(RequestError, match="'supervised', 'dpo' or 'reinforcement'") as refused:
        method_hyperparameters({"method": {"type": "ppo"}})
    assert refused.value.code == "unsupported_method"


def test_a_dpo_job_trains_openai_preference_rows(client, tmp_path):
    rows = [{"input": {"messages": [{"role": "user", "content": f"{q} [{k}]"}]},
             "preferred_output": [{"role": "assistant", "content": a}],
             "non_preferred_output": [{"role": "assistant", "content": f"I cannot say ({k})."}]}
            for k in range(2) for q, a in FAQ]
    upload = client.files.create(file=write_jsonl(tmp_path / "dpo.jsonl", rows).open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=upload.id, suffix="dpo", method={
        "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 4}}})
    done = wait_for(lambda: finished(client, job.id))
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.2
    losses = step_losses(client, job.id)
    assert losses and abs(losses[min(losses)] - 0.6931471805599453) < 1e-6  # DPO starts at ln 2


def test_guards_refuse_with_openai_errors(server):
    url, auth = server[0], {"Authorization": f"Bearer {KEY}"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(url + "/v1/fine_tuning/jobs", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/health").status_code == 200  # liveness needs no key
    r = httpx.get(url + "/v1/files", headers={**auth, "Host": "evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    big = {"file": ("big.jsonl", b"x" * 120_000)}
    r = httpx.post(url + "/v1/files", headers=auth, files=big, data={"purpose": "fine-tune"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    r = httpx.post(url + "/v1/files", headers=auth, files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(url + "/v1/fine_tuning/jobs", headers=auth, json={"model": "tiny-model0", "x": "y" * 30_000})
    assert r.status_code == 413
    for path in ("/v1/files/..%2F..%2Ftunesmith.db/content", "/v1/files/%2Fetc%2Fpasswd", "/v1/files/file-1",
                 "/v1/fine_tuning/jobs/..%2Fx", "/v1/fine_tuning/jobs/ftjob-abc/events"):
        r = httpx.get(url + path, headers=auth)
        assert r.status_code == 404 and "error" in r.json(), path


def test_another_sites_page_cannot_upload_or_post_json_as_text(server, client, faq_upload):
    """What an attacker's page can send without a preflight: a plain HTML form's multipart upload, and
    JSON declared as text/plain. Refused by the guard (its Origin) before any route reads them, and by
    the JSON routes (their Content-Type) even from a client that is not a browser."""
    url, auth = server[0], {"Authorization": f"Bearer {KEY}"}
    files, jobs = len(client.files.list().data), len(client.fine_tuning.jobs.list(limit=100).data)
    form = {"files": {"file": ("a.jsonl", b'{"text": "x"}\n')}, "data": {"purpose": "fine-tune"}}
    job = json.dumps({"model": "tiny-model0", "training_file": faq_upload.id})
    for origin in ("http://evil.example", "null"):
        for headers in ({}, auth):  # refused for its Origin, whether or not the key rides along
            r = httpx.post(url + "/v1/files", headers={**headers, "Origin": origin}, **form)
            assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin", r.text
            r = httpx.post(url + "/v1/fine_tuning/jobs", content=job,
                           headers={**headers, "Origin": origin, "Content-Type": "text/plain"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin", r.text
    r = httpx.post(url + "/v1/fine_tuning/jobs", content=job, headers={**auth, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(url + "/v1/fine_tuning/jobs", headers=auth, **form)  # a form on a JSON route
    assert r.status_code == 415
    r = httpx.post(url + "/v1/files", headers=auth, json={"purpose": "fine-tune"})  # JSON on the upload route
    assert r.status_code == 415
    assert (len(client.files.list().data), len(client.fine_tuning.jobs.list(limit=100).data)) == (files, jobs)
    own = httpx.post(url + "/v1/files", headers={**auth, "Origin": url, "Sec-Fetch-Site": "same-origin"}, **form)
    assert own.status_code == 200 and client.files.delete(own.json()["id"]).deleted  # the page's own upload


def test_chunked_upload_over_the_cap_is_refused(server):
    def chunks():  # no Content-Length: the server counts while receiving
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        for _ in range(120):
            yield b"z" * 1000
        yield b"\r\n--b--\r\n"

    r = httpx.post(server[0] + "/v1/files", content=chunks(),
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert not [p for p in (server[2] / "files").iterdir() if p.name.startswith(".")]  # no partial file left


def test_a_second_server_on_one_home_is_refused(server):
    with pytest.raises(HomeInUse, match="in use by another tunesmith server"):
        open_home(server[2])


def test_jobs_cli_reads_home_and_asks_the_server(server, two_jobs):
    short, long, _ = two_jobs
    listed = CliRunner().invoke(main, ["jobs", "list", "--home", str(server[2])])
    assert listed.exit_code == 0 and f"{long.id}  succeeded" in listed.output
    shown = CliRunner().invoke(main, ["jobs", "show", short.id, "--url", server[0], "--api-key", KEY])
    assert shown.exit_code == 0 and "Training finished" in shown.output, shown.output
    refused = CliRunner().invoke(main, ["jobs", "cancel", short.id, "--url", server[0], "--api-key", KEY])
    assert refused.exit_code != 0 and "already succeeded" in refused.output


def test_job_events_subscriber_writes_each_kind(tmp_path):
    store = Store(tmp_path / DB_NAME)
    events = JobEvents(store, "ftjob-0")
    events(StepEvent(1, 2.5, 1e-3, 0, 100, 50.0, 0.7, (), total_steps=2))
    events(EvaluationEvent(1, 2.25))
    events(ProbesEvent(1, {"perplexity": {"delta": 0.1}}, within_budget=False))
    events(CheckpointEvent(1, "run/checkpoints/step-1"))
    events(StepEvent(1, 2.5, 1e-3, 0, 100, 50.0, 0.7, (), total_steps=2))  # recomputed after a resume: replaced
    messages = [e["message"] for e in store.events("ftjob-0")][::-1]
    assert messages == ["Step 1/2: training loss=2.5000", "Step 1: validation loss=2.2500",
                        "Step 1: general probes over the forgetting budget", "Checkpoint saved at step 1"]
    assert store.checkpoints("ftjob-0")[0]["metrics"] == {"step": 1, "train_loss": 2.5, "valid_loss": 2.25}
    events(FinishedEvent(2.5, 2.0, 2.0, 1, "last step", None, -0.2, 100, 1.0, 1, 0, "lora", "tiny"))
    assert store.events("ftjob-0", limit=1)[0]["message"] == "Training finished: validation loss 2.5000 -> 2.0000 " \
                                                             "(step 1: last step)"



def test_job_events_of_a_grpo_job_say_the_reward(tmp_path):
    store = Store(tmp_path / DB_NAME)
    events = JobEvents(store, "ftjob-1", "grpo")
    events(StepEvent(1, 0.01, 1e-4, 0, 100, 50.0, 0.7, (), total_steps=2, rollout={"reward": 0.25, "kl": 0.0}))
    events(EvaluationEvent(1, -0.5, reward={"reward": 0.5, "reward_sampled": 0.375, "prompts": 4}))
    events(FinishedEvent(-0.25, -0.5, -0.5, 1, "last step", None, None, 100, 1.0, 1, 0, "lora", "tiny"))
    rows = store.events("ftjob-1")[::-1]
    assert [r["message"] for r in rows] == ["Step 1/2: training loss=0.0100, sampled reward=0.2500",
                                            "Step 1: held-out reward=0.5000 (sampled 0.3750)",
                                            "Training finished: held-out reward 0.2500 -> 0.5000 (step 1: last step)"]
    assert rows[0]["data"]["reward"] == 0.25 and rows[1]["data"] == {"step": 1, "valid_loss": -0.5, "reward": 0.5,
                                                                     "reward_sampled": 0.375, "prompts": 4}

def start_server(home: Path, port: int, tiny_model_dir, base_config) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "server", "--home", str(home), "--port", str(port),
                             "--model", str(tiny_model_dir), "--config", str(base_config), "--no-eval",
                             "--api-key", KEY],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _up(port) or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, "the server did not start"
    return proc


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    except httpx.HTTPError:
        return False


def test_kill_9_of_the_server_mid_job_resumes_with_the_same_losses(client, two_jobs, tiny_model_dir, base_config,
                                                                    tmp_path):
    from openai import OpenAI

    reference = step_losses(client, two_jobs[1].id)  # the uninterrupted long job
    home, port = tmp_path / "home", free_port()
    proc = start_server(home, port, tiny_model_dir, base_config)
    killed = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=60)
    upload = killed.files.create(file=write_jsonl(tmp_path / "faq.jsonl", faq_rows("chat")).open("rb"),
                                 purpose="fine-tune")
    job = killed.fine_tuning.jobs.create(model="tiny-model0", training_file=upload.id, hyperparameters=LONG_JOB)
    store = Store(home / DB_NAME)
    wait_for(lambda: store.checkpoints(job.id))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.job(job.id)["status"] == "running" and not (home / "runs" / job.id / "summary.json").exists()
    proc = start_server(home, port, tiny_model_dir, base_config)  # its new worker waits for the old one to go
    try:
        done = wait_for(lambda: finished(killed, job.id))
        assert done.status == "succeeded", done.error
        assert "resuming" in (home / "logs" / f"{job.id}.log").read_text()
        assert any(e.message.startswith("The server restarted") for e in killed.fine_tuning.jobs.list_events(job.id))
        assert step_losses(killed, job.id) == reference and sorted(reference) == list(range(1, 61))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_a_full_job_queue_is_429(server, tmp_path):
    from starlette.testclient import TestClient

    served = server[1]
    settings = ServerSettings(tmp_path, model="unused", limits=ServerLimits(max_queued_jobs=2))
    app = build_server_app(open_home(tmp_path), settings, served.model, served.tokenizer, "tiny-model0")
    # Outside a `with`, the lifespan (and so the scheduler) does not run: the jobs stay waiting.
    web = TestClient(app, base_url="http://127.0.0.1")
    upload = web.post("/v1/files", files={"file": ("a.jsonl", b'{"text": "x"}\n')}, data={"purpose": "fine-tune"})
    body = {"model": "tiny-model0", "training_file": upload.json()["id"]}
    assert [web.post("/v1/fine_tuning/jobs", json=body).status_code for _ in range(3)] == [200, 200, 429]
    refused = web.post("/v1/fine_tuning/jobs", json=body).json()["error"]
    assert refused["code"] == "queue_full" and refused["type"] == "rate_limit_error"
