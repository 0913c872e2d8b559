"""The web page in a real Chromium (Debian's, through Playwright) on `tunesmith ui` with the tiny model:
a bad file's line named, a job started from the form with its steps arriving live, its report, a streamed
chat with base and tuned side by side, its adapter downloaded, and a kill -9 of the server mid-job that the
page rides out. No console errors on any page; each page's screenshot goes to docs/img/ui-*.png."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import FAQ, faq_rows, write_jsonl
from test_serve import free_port
from test_server import BASE_CONFIG, wait_for
from tunesmith.data.preview import length_histogram
from tunesmith.server.store import Store
from tunesmith.server.worker import DB_NAME
from tunesmith.ui.api import field_docs, train_form

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "sk-ui-test"
IMG = Path(__file__).parents[1] / "docs" / "img"
QUIET_CONFIG = {**BASE_CONFIG, "eval_every": 3}


def test_train_form_has_the_config_defaults_and_docstrings():
    from tunesmith.config import TrainConfig, default_lr

    docs = field_docs(TrainConfig)
    assert docs["seed"] == "Seeds the split, the data order, adapter init and dropout."
    form = train_form(TrainConfig(data="x", batch_size=3))
    fields = {f["name"]: f for f in form["fields"]}
    assert fields["batch_size"]["value"] == 3 and fields["batch_size"]["help"] == docs["batch_size"]
    assert fields["learning_rate_multiplier"]["value"] == 1
    assert fields["learning_rate_multiplier"]["help"].startswith(f"Multiplies the peak learning rate "
                                                                 f"{default_lr('lora', 'sft'):g}.")
    assert length_histogram([1, 5, 12, 24], 4) == {"edges": [0, 6, 12, 18, 24], "counts": [2, 0, 1, 1]}


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
    assert page.locator("pre.preview mark").count() >= 1  # the trained tokens of the first examples, marked
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
