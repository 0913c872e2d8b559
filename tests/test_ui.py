"""The web page in a real Chromium (Debian's, through Playwright) on `tunesmith ui` with the tiny model:
a bad file's line named, a job started from the form with its steps arriving live, its report, a streamed
chat with base and tuned side by side, its adapter downloaded, and a kill -9 of the server mid-job that the
page rides out; then fine-tuning vs RAG run in the background from the Compare page, two runs side by
side, retrieval in the playground, merged and GGUF exports with their parity figures, and the first load.
No console errors on any page; each page's screenshot goes to docs/img/ui-*.png. Last, a page of another
site tries to upload and to start a job, and is refused."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import FAQ, faq_rows, write_jsonl
from test_serve import free_port
from test_server import BASE_CONFIG, wait_for
from tunesmith.data.preview import length_histogram
from tunesmith.server.store import DB_NAME, Store
from tunesmith.settings import RetrievalSettings
from tunesmith.ui.api import PREVIEWS, field_docs, run_view, settings_differ, train_form
from tunesmith.ui.tasks import TaskRunner, read_task, run_task, write_task

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "sk-ui-test"
IMG = Path(__file__).parents[1] / "docs" / "img"
QUIET_CONFIG = {**BASE_CONFIG, "eval_every": 3, "grpo": {"group_size": 2, "max_completion_tokens": 4}}


def test_train_form_has_the_config_defaults_and_docstrings():
    from tunesmith.config import TrainConfig, default_lr

    docs = field_docs(TrainConfig)
    assert docs["seed"] == "Seeds the split, the data order, adapter init and dropout."
    form = train_form(TrainConfig(data="x", batch_size=3))
    fields = {f["name"]: f for f in form["fields"]}
    assert fields["batch_size"]["value"] == 3 and fields["batch_size"]["help"] == docs["batch_size"]
    assert fields["learning_rate_multiplier"]["value"] == 1
    objectives = {o["name"]: o for o in form["objectives"]}
    assert {n: o["method"] for n, o in objectives.items()} == {"sft": "supervised", "dpo": "dpo",
                                                                "grpo": "reinforcement"}
    assert objectives["grpo"]["lr"] == default_lr("lora", "grpo") and objectives["sft"]["lr"] == default_lr("lora")
    assert [f["name"] for f in objectives["grpo"]["fields"]] == ["eval_interval"]
    assert [(f["name"], f["value"]) for f in objectives["dpo"]["fields"]] == [("beta", 0.1)]
    assert {s["key"]: s["value"] for s in form["grpo_settings"]}["grpo.group_size"] == 8
    assert form["grader"]["type"] == "text_similarity"
    assert length_histogram([1, 5, 12, 24], 4) == {"edges": [0, 6, 12, 18, 24], "counts": [2, 0, 1, 1]}


def test_the_data_check_of_an_upload_names_the_objective_its_rows_call_for(tmp_path, tiny_tokenizer):
    from tunesmith.config import TrainConfig
    from tunesmith.ui.api import check_report

    rft = [{"messages": [{"role": "user", "content": q}], "city": "Paris"} for q, _ in FAQ]
    pairs = [{"prompt": q, "chosen": a, "rejected": "No idea."} for q, a in FAQ]
    config = TrainConfig(data="x")
    for rows, objective in ((rft, "grpo"), (pairs, "dpo"), (faq_rows("chat"), None)):
        path = write_jsonl(tmp_path / "up.jsonl", rows)
        report = check_report(path, "up.jsonl", config, tiny_tokenizer)
        assert report["ok"] and report["objective"] == objective, report["errors"]


def test_settings_differ_flattens_and_skips_the_run_folder():
    a = {"epochs": 4.0, "output": "runs/a", "lora": {"r": 8, "alpha": 16}, "seed": 0}
    b = {"epochs": 12.0, "output": "runs/b", "lora": {"r": 8, "alpha": 32}, "seed": 0, "eval": "x.jsonl"}
    assert settings_differ(a, b) == [{"key": "epochs", "a": 4.0, "b": 12.0}, {"key": "eval", "a": None, "b": "x.jsonl"},
                                     {"key": "lora.alpha", "a": 16, "b": 32}]


def test_run_view_reads_the_run_through_its_owner_and_skips_a_torn_metrics_line(tmp_path):
    rows = [{"step": 0, "val_loss": 3.5}, {"step": 1, "loss": 3.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 2, "lo')
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 1}))
    view = run_view(tmp_path)
    assert view["metrics"] == rows  # the line a crash tore mid-append is left out, as RunDir.metrics does
    assert view["summary"] == {"steps": 1} and view["eval"] is None and view["adapter"] is False


def test_a_task_left_running_by_a_gone_server_reads_interrupted_and_a_finished_one_as_it_was(tmp_path):
    running = {"kind": "compare", "state": "running", "args": {}, "started": 1.0, "finished": None, "log": ["x"],
               "result": None, "error": None}
    write_task(tmp_path, "compare", running)
    write_task(tmp_path, "export-merged", {**running, "state": "succeeded", "finished": 2.0, "result": {"files": []}})
    runner = TaskRunner()  # a new server's: no process of its own behind the state files
    assert runner.state(tmp_path, "compare") == {**running, "state": "interrupted",
                                                 "error": "the server stopped while this ran: start it again"}
    assert runner.state(tmp_path, "export-merged") == read_task(tmp_path, "export-merged")
    assert not runner.busy()


def test_a_failing_task_records_its_error(tmp_path):
    run = tmp_path / "not-a-run"
    run.mkdir()
    run_task(run, "compare", {"knowledge": "k.txt", "limit": 1, "seen": 0, "max_new_tokens": 2, "top_k": 1})
    state = read_task(run, "compare")
    assert state["state"] == "failed" and "it has no config.yaml" in state["error"] and state["finished"]


class UiServer:
    """`tunesmith ui --no-open` as a process of its own (so that it can be killed with -9), restartable."""

    def __init__(self, home: Path, model_dir: Path, config: Path) -> None:
        self.home, self.port, self.proc = home, free_port(), None
        self.args = [sys.executable, "-m", "tunesmith", "ui", "--no-open", "--home", str(home), "--port",
                     str(self.port), "--model", str(model_dir), "--config", str(config), "--api-key", KEY]
        self.url = ""

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(self.args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        printed = self.proc.stdout.readline()
        self.url = re.search(r"http://\S+", printed).group(0)
        assert self.url == f"http://127.0.0.1:{self.port}/#key={KEY}", printed
        wait_for(lambda: self.up() or self.proc.poll() is not None, timeout=90)
        assert self.proc.poll() is None, "the server did not start"

    def up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, method: str, path: str, **kwargs):
        r = httpx.request(method, f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {KEY}"},
                          timeout=60, **kwargs)
        r.raise_for_status()
        return r.json()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def ui(tiny_model_dir, tmp_path_factory):
    config = tmp_path_factory.mktemp("ui-config") / "base.yaml"
    config.write_text(json.dumps(QUIET_CONFIG))
    server = UiServer(tmp_path_factory.mktemp("ui-home"), tiny_model_dir, config)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium; `make test` does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser, ui):
    """A fresh tab on the page with the key; its console errors and page errors collected in `page.errors`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.goto(ui.url)
    tab.get_by_role("heading", name="Data").wait_for()
    yield tab
    context.close()


def shoot(page, name: str) -> None:
    """Each page rendered to a PNG: into docs/img with TUNESMITH_UI_SCREENSHOTS=1 (how docs/ui.md's
    images are refreshed), else into a temporary folder, so a test run leaves the tree unchanged."""
    folder = IMG if os.environ.get("TUNESMITH_UI_SCREENSHOTS") else Path(tempfile.gettempdir()) / "tunesmith-ui"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"ui-{name}.png"), full_page=True)


def test_empty_states_before_any_job(page, ui):
    assert ui.api("GET", "/v1/fine_tuning/jobs")["data"] == []
    for hash_, text in (("#/runs", "No jobs yet"), ("#/compare", "No job has succeeded yet"),
                        ("#/export", "No job has succeeded yet"), ("#/train", "No training file yet")):
        page.goto(ui.url.split("#")[0] + hash_)
        page.get_by_text(text).wait_for()
    assert page.errors == []


def test_a_bad_file_is_named_by_its_line(page, tmp_path):
    rows = faq_rows("chat")
    rows[2] = {"messages": [{"role": "user", "content": FAQ[2][0]}, {"role": "assistant", "content": ""}]}
    page.get_by_label("Training file").set_input_files(str(write_jsonl(tmp_path / "bad.jsonl", rows)))
    page.get_by_text("Data check failed").wait_for()
    row = page.locator("table tr", has_text="bad.jsonl:3")
    assert row.locator("td").nth(0).inner_text() == "error"
    assert row.locator("td").nth(2).inner_text() == "messages[1].content"
    shoot(page, "data")
    assert page.errors == []


def test_upload_train_watch_report_chat_and_download(page, ui, tmp_path):
    page.get_by_label("Training file").set_input_files(str(write_jsonl(tmp_path / "faq.jsonl", faq_rows("chat"))))
    page.get_by_text("Data check passed").wait_for()
    # The first examples, each a question and its answer: one trained run apiece (the answer and its
    # end-of-turn token), marked.
    assert page.locator("pre.preview").count() == PREVIEWS
    assert page.locator("pre.preview mark").count() == PREVIEWS
    assert page.locator("svg[aria-label^='token-length histogram'] rect").count() == 12
    page.get_by_role("link", name="Train on faq.jsonl").click()
    page.get_by_label("n_epochs").fill("4")
    page.get_by_label("batch_size").fill("3")
    page.get_by_label("suffix").fill("faq")
    shoot(page, "train")
    page.get_by_role("button", name=re.compile("Start training")).click()
    page.locator("#step").wait_for()  # a step arrived while the job ran
    assert page.locator("#status").inner_text() in ("running", "succeeded")
    page.wait_for_function("document.getElementById('status')?.textContent === 'succeeded'", timeout=120_000)
    job_id = page.locator("h1 code").inner_text()
    assert page.locator("#step").inner_text() == "12"
    last = next(e for e in ui.api("GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit=100")["data"]
                if e["message"].startswith("Step 12/"))
    assert page.locator("#tokens-per-s").inner_text() == str(int(last["data"]["tokens_per_s"] + 0.5))  # Math.round
    page.get_by_role("link", name="Open the report").wait_for()
    shoot(page, "job")

    summary = json.loads((ui.home / "runs" / job_id / "summary.json").read_text())
    page.get_by_role("link", name="Runs").click()
    row = page.locator("tr", has_text=job_id)
    assert f"{summary['base_val_loss']:.4f}".rstrip("0") in row.inner_text()
    shoot(page, "runs")

    row.get_by_role("link", name="report").click()
    evaluation = json.loads((ui.home / "runs" / job_id / "eval.json").read_text())
    assert page.locator("#verdict p").first.inner_text() == evaluation["verdict"].splitlines()[0]
    page.locator("img.figure").first.wait_for()
    shoot(page, "report")

    chat_both_sides(page, ui, job_id)
    download_the_adapter(page, ui, job_id)
    assert page.errors == []


def chat_both_sides(page, ui, job_id: str) -> None:
    tuned = ui.api("GET", f"/v1/fine_tuning/jobs/{job_id}")["fine_tuned_model"]
    page.goto(ui.url.split("#")[0] + f"#/play?model={tuned}")
    page.get_by_label("Message").fill("What is a building permit?")
    page.get_by_label("max_tokens").fill("12")
    page.get_by_role("button", name="Send to both").click()
    for side in ("left", "right"):
        page.locator(f"#{side}-answer[data-done]").wait_for()
    for side, model in (("left", "tiny-model0"), ("right", tuned)):  # greedy: what the stream itself sends
        body = {"model": model, "max_tokens": 12, "stream": True,
                "messages": [{"role": "user", "content": "What is a building permit?"}]}
        with httpx.stream("POST", f"http://127.0.0.1:{ui.port}/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"}) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert len(chunks) > 2 and page.locator(f"#{side}-answer").text_content() == streamed
    shoot(page, "play")


def download_the_adapter(page, ui, job_id: str) -> None:
    page.get_by_role("link", name="Export").click()
    page.get_by_role("link", name=re.compile(job_id)).click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the adapter (zip)").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    adapter = ui.home / "runs" / job_id / "adapter"
    assert sorted(archive.namelist()) == sorted(p.name for p in adapter.iterdir())
    assert archive.read("adapter_model.safetensors") == (adapter / "adapter_model.safetensors").read_bytes()
    shoot(page, "export")


def test_the_page_rides_out_a_kill_9_of_the_server_mid_job(page, ui):
    upload = ui.api("POST", "/v1/files", files={"file": ("long.jsonl", "".join(json.dumps(r) + "\n" for r in faq_rows(
        "chat")))}, data={"purpose": "fine-tune"})
    job = ui.api("POST", "/v1/fine_tuning/jobs", json={"model": "tiny-model0", "training_file": upload["id"],
                                                       "hyperparameters": {"n_epochs": 12, "batch_size": 3}})
    page.goto(ui.url.split("#")[0] + f"#/job/{job['id']}")
    store = Store(ui.home / DB_NAME)
    wait_for(lambda: store.checkpoints(job["id"]), timeout=90)
    page.locator("#step").wait_for()
    ui.stop(signal.SIGKILL)
    page.locator("#gone").wait_for(state="visible")
    ui.start()  # the new server's worker resumes the job from its checkpoint
    page.wait_for_function("document.getElementById('status')?.textContent === 'succeeded'", timeout=120_000)
    assert page.locator("#gone").is_hidden()
    assert page.locator("#step").inner_text() == "36"
    assert any(e["message"].startswith("The server restarted") for e in store.events(job["id"], limit=100))
    # While nothing listened, each poll's failed fetch is logged by the browser itself; nothing else may be.
    assert [e for e in page.errors if "ERR_CONNECTION_REFUSED" not in e] == []


def js_fmt(x: float, digits: int) -> str:
    """The page's fmt(): +x.toFixed(digits), as JavaScript prints it (no trailing zeros)."""
    text = f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def js_exp(x: float) -> str:
    """x.toExponential(2) as JavaScript prints it: 1.19e-7, 0.00e+0."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:.2e}")


def succeeded_jobs(ui, count: int) -> list[dict]:
    """At least `count` succeeded jobs, newest first: the earlier tests' ones, else short ones trained now."""
    def done():
        return [j for j in ui.api("GET", "/v1/fine_tuning/jobs?limit=100")["data"] if j["status"] == "succeeded"]

    for epochs in range(2 + len(done()), 2 + count):  # each its own length: two of them differ in epochs
        faq = "".join(json.dumps(r) + "\n" for r in faq_rows("chat"))
        upload = ui.api("POST", "/v1/files", files={"file": ("faq.jsonl", faq)}, data={"purpose": "fine-tune"})
        job = ui.api("POST", "/v1/fine_tuning/jobs", json={"model": "tiny-model0", "training_file": upload["id"],
                                                           "hyperparameters": {"n_epochs": epochs, "batch_size": 3}})
        wait_for(lambda: ui.api("GET", f"/v1/fine_tuning/jobs/{job['id']}")["status"] == "succeeded", 600, every=1)
    return done()


def test_compare_page_runs_fine_tuning_vs_rag_in_the_background(page, ui, tmp_path):
    job_id = succeeded_jobs(ui, 1)[0]["id"]
    page.goto(ui.url.split("#")[0] + f"#/compare/{job_id}")
    page.get_by_text("No comparison yet.").wait_for()
    assert page.get_by_label("knowledge", exact=True).input_value() == job_id  # the run's own training data
    for name, value in (("limit", "2"), ("seen", "2"), ("max_new_tokens", "4"), ("top_k", "2")):
        page.get_by_label(name, exact=True).fill(value)
    page.get_by_label("top_k", exact=True).press("Enter")  # the keyboard submits the form
    page.wait_for_function("document.querySelector('.task-state')?.textContent === 'succeeded'", timeout=600_000)
    result = json.loads((ui.home / "runs" / job_id / "compare.json").read_text())
    assert result["settings"] == {"limit": 2, "seen": 2, "max_new_tokens": 4}
    assert page.locator("#recommendation p").inner_text() == result["recommendation"]
    tuned = page.locator("table[data-split='unseen'] tr", has_text="tuned").first.locator("td").first
    f1 = result["splits"]["unseen"]["systems"]["tuned"]["token_f1"]
    assert tuned.inner_text() == f"{js_fmt(f1['value'], 3)} [{js_fmt(f1['ci95'][0], 3)}, {js_fmt(f1['ci95'][1], 3)}]"
    assert page.locator("table.compare-table").count() == len([s for s in result["splits"] if s != "all"])
    bars = page.locator("figure[data-metric=token_f1] rect.bar")  # the picture: per split, per system
    assert bars.count() == 4 * len([s for s in result["splits"] if s != "all"])
    assert float(bars.and_(page.locator("[data-split=unseen][data-system=tuned]")).get_attribute("data-value")) \
        == f1["value"]
    assert page.locator("figure[data-metric=made_up_rate]").count() == 0  # no RAFT splits: no rates shown
    r = result["retrieval"]
    assert (f"{r['passages']} passages, top {r['top_k']}, prompts within {r['prompt_budget_tokens']} tokens; "
            f"the answer was in a retrieved passage for {js_fmt(100 * r['answer_found_rate'], 1)}% of the questions") \
        in " ".join(page.locator("#compare-result p.muted").inner_text().split())
    assert any(line.startswith("compare: ") for line in read_task(ui.home / "runs" / job_id, "compare")["log"])
    shoot(page, "compare")

    empty = ui.api("POST", "/v1/files", files={"file": ("empty.txt", "  \n")}, data={"purpose": "fine-tune"})
    page.reload()
    page.get_by_label("knowledge", exact=True).select_option(empty["id"])
    page.get_by_role("button", name="Start the comparison").click()
    page.wait_for_function("document.querySelector('.task-state')?.textContent === 'failed'", timeout=600_000)
    assert "text: the file is empty" in page.locator("#compare-status [role=alert]").inner_text()
    assert page.locator("#recommendation p").inner_text() == result["recommendation"]  # the last good one stays
    raft_rates_are_drawn(page, ui.home / "runs" / job_id / "compare.json", result)
    assert page.errors == []


def raft_rates_are_drawn(page, path: Path, result: dict) -> None:
    """compare.json with the splits of a run trained with retrieval (its rates as add_rates writes
    them: tuned+rag hands every unanswerable question off, the others none) draws the rates per split."""
    import copy

    import numpy as np

    from tunesmith.commands.compare import COMPARISONS, SYSTEMS
    from tunesmith.evaluation.handoff import add_rates

    n = result["splits"]["unseen"]["n"]
    for name in ("found", "unanswerable"):
        flags = {s: np.full(n, float(s == "tuned+rag" and name == "unanswerable")) for s in SYSTEMS}
        result["splits"][name] = add_rates(copy.deepcopy(result["splits"]["unseen"]), name, flags, COMPARISONS)
    path.write_text(json.dumps(result))
    page.reload()
    made_up = page.locator("figure[data-metric=made_up_rate] rect.bar")
    made_up.first.wait_for()
    assert made_up.count() == 4 and {made_up.nth(k).get_attribute("data-split") for k in range(4)} == {"unanswerable"}
    assert page.locator("figure[data-metric=made_up_rate] rect.bar[data-system='tuned+rag']").get_attribute(
        "data-value") == "0" and made_up.first.get_attribute("data-value") == "1"
    assert page.locator("figure[data-metric=false_handoff_rate] rect.bar").count() == 4  # found
    assert page.locator("table[data-split=unanswerable] th", has_text="made_up_rate").count() == 1
    shoot(page, "compare-raft")


def test_two_runs_side_by_side(page, ui):
    newer, older = succeeded_jobs(ui, 2)[:2]
    page.get_by_role("link", name="Runs").click()
    page.get_by_label(f"pick {older['id']}").check()
    assert page.get_by_role("button", name="Compare the two picked runs side by side").is_disabled()
    page.get_by_label(f"pick {newer['id']}").press("Space")  # keyboard reachable
    page.get_by_role("button", name="Compare the two picked runs side by side").click()
    table = page.locator("#side-by-side-table")
    table.wait_for()
    runs = [ui.api("GET", f"/ui/api/jobs/{j['id']}/run") for j in (newer, older)]  # the Runs list is newest first
    loss = table.locator("tr", has_text="Held-out loss").locator("td")
    for k, run in enumerate(runs):
        s = run["summary"]
        assert loss.nth(k).inner_text() == f"{js_fmt(s['base_val_loss'], 4)} → {js_fmt(s['final_val_loss'], 4)}"
    assert table.locator("tr", has_text="Verdict").locator("td").nth(1).inner_text() == \
        runs[1]["eval"]["verdict"].splitlines()[0]
    differ = settings_differ(runs[0]["config"], runs[1]["config"])
    assert "epochs" in [d["key"] for d in differ]
    assert page.locator("#differ tbody th").all_inner_texts() == [d["key"] for d in differ]
    shoot(page, "runs-side-by-side")
    assert page.errors == []


def test_playground_retrieves_passages_from_a_knowledge_file(page, ui):
    job = succeeded_jobs(ui, 1)[0]
    page.goto(ui.url.split("#")[0] + f"#/play?model={job['fine_tuned_model']}")
    page.get_by_label("Retrieval").select_option(job["id"])  # the job's own training file
    question, answer = FAQ[1]
    page.get_by_label("Message").fill(question)
    page.get_by_label("max_tokens").fill("6")
    page.get_by_role("button", name="Send to both").click()
    page.locator("#right-passage-list li").first.wait_for()
    for side in ("left", "right"):
        page.locator(f"#{side}-answer[data-done]").wait_for()
    found = ui.api("POST", "/ui/api/retrieve", json={"knowledge": job["id"], "max_tokens": 6,
                                                     "messages": [{"role": "user", "content": question}]})
    shown = page.locator("#right-passage-list li").all_inner_texts()
    assert len(shown) == len(found["passages"]) == RetrievalSettings.top_k  # the index holds far more passages
    assert all(text.endswith(p["text"]) for text, p in zip(shown, found["passages"]))
    assert answer in found["passages"][0]["text"]  # MiniLM finds the FAQ's own answer first
    last = found["messages"][-1]["content"]
    assert last.endswith(f"Question: {question}") and answer in last
    shoot(page, "play")
    assert page.errors == []


def test_export_merged_with_its_parity_figures_and_a_failing_gguf(page, ui):
    job_id = succeeded_jobs(ui, 1)[0]["id"]
    run = ui.home / "runs" / job_id
    page.goto(ui.url.split("#")[0] + f"#/export/{job_id}")
    page.get_by_role("button", name="Export merged").click()
    page.wait_for_function("document.querySelector('#export-merged .task-state')?.textContent === 'succeeded'",
                           timeout=600_000)
    result = read_task(run, "export-merged")["result"]
    assert page.locator("#export-merged .max-abs-diff").inner_text() == js_exp(result["max_abs_diff"])
    assert page.locator("#export-merged .relative-diff").inner_text() == js_exp(result["relative_diff"])
    assert result["files"] == sorted(p.name for p in (run / "export-merged").iterdir())
    with page.expect_download() as download:
        page.get_by_role("button", name="Download model.safetensors").click()
    assert Path(download.value.path()).read_bytes() == (run / "export-merged" / "model.safetensors").read_bytes()

    page.get_by_label("GGUF type").select_option("f32")
    page.get_by_role("button", name="Export gguf").click()  # the tiny model's tokenizer is not one llama.cpp knows
    page.wait_for_function("document.querySelector('#export-gguf .task-state')?.textContent === 'failed'",
                           timeout=600_000)
    assert "pre-tokenizer" in page.locator("#export-gguf [role=alert]").inner_text()
    assert read_task(run, "export-gguf")["args"] == {"gguf_type": "f32"}
    shoot(page, "export")
    assert page.errors == []


def test_first_load_is_correct_and_timed(browser, ui):
    """Each first load in a fresh tab (no cache) until the page is drawn with the server's figures; the
    times go to docs/ui.md (speed is measured, not asserted)."""
    times = []
    for hash_, heading in (("#/data", "Data"), ("#/runs", "Runs"), ("#/runs", "Runs")):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        errors = []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        if hash_ == "#/data":  # as `tunesmith ui` opens it: the key in the fragment
            tab.goto(ui.url)
        else:  # a tab that has the key already, opened on a page that reads the server's figures
            tab.add_init_script(f"sessionStorage.setItem('tunesmith-api-key', '{KEY}')")
            tab.goto(ui.url.split("#")[0] + hash_)
        tab.get_by_role("heading", name=heading, exact=True).wait_for()
        tab.wait_for_function("performance.getEntriesByName('tunesmith-ready').length === 1")
        times.append((hash_, round(tab.evaluate("performance.getEntriesByName('tunesmith-ready')[0].startTime"))))
        assert errors == []
        if hash_ == "#/runs":
            assert tab.locator("input.pick").count() == len(ui.api("GET", "/v1/fine_tuning/jobs?limit=100")["data"])
        context.close()
    print(f"first load, ms to the page drawn: {times}")
    (Path(tempfile.gettempdir()) / "tunesmith-ui-first-load.json").write_text(json.dumps(times))


ANOTHER_SITE = """<!doctype html><title>any site the user visits</title>
<form id="upload" action="{target}/v1/files" method="post" enctype="multipart/form-data">
  <input type="hidden" name="purpose" value="fine-tune"><input type="file" name="file" id="file">
</form>"""
"""An attacker's page: a plain HTML form (no preflight) that uploads to the server; its script posts JSON
as text/plain."""


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def another_site(folder: Path):
    """`folder` served from another origin (another port of this host), as any site could serve its page."""
    handler = functools.partial(QuietFiles, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as site:
        threading.Thread(target=site.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{site.server_address[1]}"
        finally:
            site.shutdown()


def test_another_sites_page_cannot_drive_the_server_and_the_own_page_still_works(browser, ui, tmp_path):
    target = f"http://127.0.0.1:{ui.port}"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(ANOTHER_SITE.format(target=target))
    data = write_jsonl(tmp_path / "faq.jsonl", faq_rows("chat"))
    files, jobs = ui.api("GET", "/v1/files")["data"], ui.api("GET", "/v1/fine_tuning/jobs?limit=100")["data"]
    job = json.dumps({"model": "tiny-model0", "training_file": files[0]["id"] if files else "file-" + "0" * 24})
    context = browser.new_context()
    tab = context.new_page()

    def sent(method: str, path: str):
        return tab.expect_response(lambda r: r.url == target + path and r.request.method == method)

    with another_site(tmp_path / "site") as site:
        tab.goto(site + "/index.html")
        tab.set_input_files("#file", str(data))
        with sent("POST", "/v1/files") as upload:
            tab.evaluate("setTimeout(() => document.getElementById('upload').submit())")  # it navigates
        tab.wait_for_url(target + "/v1/files")
        shown = tab.evaluate("document.body.innerText")  # the answer the form navigated to
        tab.goto(site + "/index.html")
        with sent("POST", "/v1/fine_tuning/jobs") as post:  # its answer is opaque to the page: its status only
            tab.evaluate("([url, body]) => fetch(url, {method: 'POST', mode: 'no-cors', body, headers: "
                         "{'Content-Type': 'text/plain'}}).catch(() => null)", [target + "/v1/fine_tuning/jobs", job])
        with sent("GET", "/v1/files") as read:
            tab.evaluate("(url) => fetch(url, {mode: 'no-cors'}).catch(() => null)", target + "/v1/files")
    error = json.loads(shown[shown.index("{"):])["error"]  # refused for the page's origin, before any route ran
    assert upload.value.status == 403 and error["code"] == "cross_origin" and f"({site})" in error["message"], error
    assert post.value.status == 403  # not 401 (it has no key): the guard refused its origin first
    assert read.value.status == 401  # and no route answers that page without the key
    context.close()
    assert [f["id"] for f in ui.api("GET", "/v1/files")["data"]] == [f["id"] for f in files]
    assert [j["id"] for j in ui.api("GET", "/v1/fine_tuning/jobs?limit=100")["data"]] == [j["id"] for j in jobs]

    own = browser.new_context()  # the server's own page, in the same browser: its upload and check work
    page = own.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(ui.url)
    page.get_by_label("Training file").set_input_files(str(data))
    page.get_by_text("Data check passed").wait_for()
    own.close()
    assert errors == []
    assert len(ui.api("GET", "/v1/files")["data"]) == len(files) + 1


def test_the_grader_editor_runs_the_grader_on_a_row_and_starts_a_grpo_job(page, ui, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"{q} [{k}]"}], "city": "Paris"}
            for k in range(2) for q, _ in FAQ]
    page.get_by_label("Training file").set_input_files(str(write_jsonl(tmp_path / "rft.jsonl", rows)))
    page.get_by_text("Its rows are RFT prompts").wait_for()  # checked as grpo's prompts, not refused as SFT data
    page.get_by_role("link", name="Train on rft.jsonl").click()
    page.locator("#f-grader").wait_for()
    assert page.locator("#f-objective").input_value() == "grpo"
    grader = json.loads(page.locator("#f-grader").input_value())
    assert grader["reference"] == "{{item.city}}"  # the starting grader reads the rows' own field

    def run_grader(spec: dict, answer: str) -> str:
        page.locator("#f-grader").fill(json.dumps(spec))
        page.get_by_label("sample answer").fill(answer)
        page.locator("#grader-result").evaluate("e => e.innerHTML = ''")
        page.get_by_role("button", name="Run the grader on this row").click()
        page.locator("#grader-result [role=status], #grader-result [role=alert]").wait_for()
        return page.locator("#grader-result").inner_text()

    missing = run_grader({**grader, "reference": "{{item.town}}"}, "Paris")
    assert missing.startswith("Reward 0") and "item.town" in missing
    assert "$.evaluation_metric" in run_grader({**grader, "evaluation_metric": "nope"}, "Paris")  # graders/run's 400
    assert run_grader(grader, "Paris").startswith("Reward 1")
    assert page.locator("#grader-reward").inner_text() == "1"
    page.get_by_label("n_epochs").fill("1")
    page.get_by_label("batch_size").fill("6")
    page.get_by_label("eval_interval").fill("2")
    shoot(page, "train-grpo")
    page.get_by_role("button", name=re.compile("Start training")).click()
    page.wait_for_function("document.getElementById('status')?.textContent === 'succeeded'", timeout=240_000)
    assert page.locator("#curve-title").inner_text() == "Reward"
    job = ui.api("GET", f"/v1/fine_tuning/jobs/{page.locator('h1 code').inner_text()}")
    assert job["method"]["type"] == "reinforcement" and job["method"]["reinforcement"]["grader"] == grader
    assert job["method"]["reinforcement"]["hyperparameters"]["eval_interval"] == 2
    rows_route = f"http://127.0.0.1:{ui.port}/ui/api/files/{job['training_file']}/rows"
    assert httpx.get(rows_route).status_code == 401  # the editor's rows sit behind the key like every route
    assert ui.api("GET", rows_route.split(str(ui.port))[1])["rows"][0] == {"line": 1, "row": rows[0]}
    # Chromium logs the refused graders/run (a 400) as a failed resource load; nothing else may fail.
    assert [e for e in page.errors if "status of 400" not in e] == []
