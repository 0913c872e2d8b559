"""`tunesmith server` and `tunesmith jobs list|show|cancel` (registered on the root group by cli.py).
Heavy imports stay inside the functions: `tunesmith --help` loads no torch."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from .cli_options import listen_options
from .errors import TunesmithError
from .settings import JUDGE_KEY_ENV, ServerLimits

DEFAULT_URL = "http://127.0.0.1:8000"


def _server_options(command: Any) -> Any:
    """The options `server` and `ui` share: where to listen and the key (as `serve`), the home and the base model."""
    for option in reversed((
        click.option("--home", default="tunesmith-home", show_default=True, type=click.Path(file_okay=False),
                     help="Folder of the database, uploaded files, run directories and logs."),
        click.option("--model", help="Base model every job trains (default: --config's, else tunesmith's default)."),
        click.option("--config", "config", type=click.Path(exists=True, dir_okay=False),
                     help="YAML of run settings under every job (method, lora, forgetting, precision, ...)."),
        click.option("--max-upload-bytes", type=int,
                     help=f"Largest uploaded file (default {ServerLimits.max_upload_bytes})."),
        click.option("--no-eval", is_flag=True,
                     help="Skip `tunesmith eval` after a job (no report.html in result_files)."),
        click.option("--allow-python-graders", is_flag=True,
                     help="Run python graders sent to graders/run and reinforcement jobs: code run on this machine "
                          "as you, not sandboxed against reading your files (off: refused with a 400)."),
        click.option("--judge-url", envvar="TUNESMITH_JUDGE_URL",
                     help="OpenAI-compatible base URL that score_model graders ask (the only one they may; or set "
                          "TUNESMITH_JUDGE_URL)."),
        click.option("--judge-api-key", envvar=JUDGE_KEY_ENV, help=f"The judge's API key (or set {JUDGE_KEY_ENV})."),
        click.option("--judge-model", help="Model id sent to the judge instead of each grader's `model`."),
    )):
        command = option(command)
    return listen_options("Require 'Authorization: Bearer KEY' (or set TUNESMITH_API_KEY); default: a random key "
                          "made and printed at each start.")(command)


def _settings(host: str, port: int, api_key: str | None, home: str, model: str | None, config: str | None,
              allowed_hosts: tuple[str, ...], max_upload_bytes: int | None, no_eval: bool,
              allow_python_graders: bool, judge_url: str | None, judge_api_key: str | None,
              judge_model: str | None) -> Any:
    """The server's settings; without --api-key, a random key for this start (as Jupyter's token)."""
    from .server.app import ServerSettings
    from .web.guard import new_key

    limits = ServerLimits(**({"max_upload_bytes": max_upload_bytes} if max_upload_bytes else {}))
    return ServerSettings(Path(home), host, port, model, Path(config) if config else None, api_key or new_key(),
                          allowed_hosts, not no_eval, limits=limits, allow_python_graders=allow_python_graders,
                          judge_url=judge_url, judge_api_key=judge_api_key, judge_model=judge_model)


def _base_url(settings: Any) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}/"


@click.command("server")
@_server_options
def server_command(**options: Any) -> None:
    """OpenAI's fine-tuning API on this machine: files, jobs, events, checkpoints, and chat with every tuned model."""
    from .server.app import run_server
    from .ui.app import build_ui_app

    settings = _settings(**options)
    made = "" if options["api_key"] else f"  API key {settings.api_key} (made for this start: --api-key sets one)"
    click.echo(f"tunesmith server: {_base_url(settings)}v1{made}")
    run_server(settings, build_ui_app)


@click.command("ui")
@_server_options
@click.option("--no-open", is_flag=True, help="Print the page's address without opening a browser.")
def ui_command(no_open: bool, **options: Any) -> None:
    """The web page for the whole workflow (data check, train, runs, report, playground, export) on
    `tunesmith server`: starts the server and opens the page in your browser."""
    import threading

    from .server.app import run_server
    from .ui.app import build_ui_app

    settings = _settings(**options)  # a key made for this start when none is given, as Jupyter's token
    url = _base_url(settings)
    # The key rides in the fragment, which the browser keeps to itself; the page stores it for the tab.
    page = f"{url}#key={urllib.parse.quote(settings.api_key)}"
    click.echo(f"tunesmith ui: {page}  (the page answers once the base model has loaded)")
    if not no_open:
        threading.Thread(target=_open_when_up, args=(url, page), daemon=True).start()
    run_server(settings, build_ui_app)


def _open_when_up(url: str, page: str, timeout_s: float = 600.0) -> None:
    """Open the page in the default browser once /health answers (the base model loads first)."""
    import time
    import webbrowser

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "health", timeout=2):
                webbrowser.open(page)
                return
        except OSError:  # not listening yet
            time.sleep(0.5)


@click.group("jobs")
def jobs_group() -> None:
    """Fine-tuning jobs of a running server (--url), or of its --home read directly."""


def _where(command: Any) -> Any:
    for option in (
        click.option("--url", default=DEFAULT_URL, show_default=True, help="The server to ask."),
        click.option("--api-key", envvar="TUNESMITH_API_KEY", help="The server's API key (or TUNESMITH_API_KEY)."),
        click.option("--home", type=click.Path(exists=True, file_okay=False),
                     help="Read this server home directly instead of asking a server."),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON objects."),
    ):
        command = option(command)
    return command


@jobs_group.command("list")
@_where
def jobs_list(url: str, api_key: str | None, home: str | None, as_json: bool) -> None:
    """The jobs, newest first."""
    jobs = _store(home).jobs() if home else _ask(url, api_key, "GET", "/v1/fine_tuning/jobs?limit=100")["data"]
    if home:
        from .server.jobs import job_object

        jobs = [job_object(j) for j in jobs]
    if as_json:
        click.echo(json.dumps(jobs, indent=2))
        return
    for job in jobs:
        click.echo(f"{job['id']}  {job['status']:<16} {job['fine_tuned_model'] or job['model']}")


@jobs_group.command("show")
@click.argument("job_id")
@_where
def jobs_show(job_id: str, url: str, api_key: str | None, home: str | None, as_json: bool) -> None:
    """One job and its latest events."""
    if home:
        from .server.jobs import event_object, job_object

        store = _store(home)
        found = store.job(job_id)
        if found is None:
            raise TunesmithError(f"no job {job_id} in {home}")
        job, events = job_object(found), [event_object(e) for e in store.events(job_id, limit=10)]
    else:
        job = _ask(url, api_key, "GET", f"/v1/fine_tuning/jobs/{job_id}")
        events = _ask(url, api_key, "GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit=10")["data"]
    if as_json:
        click.echo(json.dumps({"job": job, "events": events}, indent=2))
        return
    click.echo(f"{job['id']}  {job['status']}  model {job['model']}  tuned {job['fine_tuned_model'] or '-'}")
    if job["error"]:
        click.echo(f"error: {job['error']['message']}")
    for event in reversed(events):
        click.echo(f"  {event['message']}")


@jobs_group.command("cancel")
@click.argument("job_id")
@_where
def jobs_cancel(job_id: str, url: str, api_key: str | None, home: str | None, as_json: bool) -> None:
    """Cancel a job: a running one stops at its next step with a checkpoint."""
    if home:
        state = _store(home).cancel(job_id)
        if state is None:
            raise TunesmithError(f"job {job_id} is not in {home}, or has finished")
    else:
        state = _ask(url, api_key, "POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")["status"]
    click.echo(json.dumps({"id": job_id, "status": state}) if as_json else f"{job_id}: {state}")


def _store(home: str) -> Any:
    from .server.store import DB_NAME, Store

    path = Path(home) / DB_NAME
    if not path.exists():
        raise TunesmithError(f"{home} is not a tunesmith server home (no {DB_NAME})")
    return Store(path)


def _ask(url: str, api_key: str | None, method: str, path: str) -> dict[str, Any]:
    """One JSON request to the server; its OpenAI error message as a TunesmithError."""
    request = urllib.request.Request(url.rstrip("/") + path, method=method,
                                     headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        raise TunesmithError(f"{url}: {exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise TunesmithError(f"no server at {url} ({exc.reason}): start `tunesmith server`, or pass --home") from None
