"""The job queue: validate new jobs' files (`data check`, and a reinforcement job's rows against its
grader), run queued jobs one at a time in creation order, each in a worker process, and pass cancels on
as SIGTERM. One thread, polling the database, so that a cancel from `tunesmith jobs cancel --home`
(which writes the database only) works too."""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..settings import JUDGE_KEY_ENV, ServerLimits
from ..web.children import Children, log_tail
from ..web.ids import new_id
from .files import file_path
from .reinforcement import python_grader_refusal
from .store import Store
from .worker import fail, log_path

log = logging.getLogger("tunesmith.server")
STOP_WAIT_S = 60.0
"""On shutdown, how long the worker has to save its checkpoint after SIGTERM before it is killed."""


class Scheduler:
    """Owns the worker process; `start` runs the loop in a daemon thread, `stop` ends both."""

    def __init__(self, store: Store, home: Path, tokenizer: Any, limits: ServerLimits,
                 allow_python_graders: bool = False, judge_api_key: str | None = None) -> None:
        self.store, self.home, self.tokenizer, self.limits = store, home, tokenizer, limits
        self.allow_python_graders = allow_python_graders
        """Whether a job's python grader may run: a job created by a server with the flag is refused by one without."""
        self.worker_env = {JUDGE_KEY_ENV: judge_api_key} if judge_api_key else {}
        """The judge's key, for a job's score_model graders: given to the worker, never written in its config."""
        self.workers: Children[str] = Children(STOP_WAIT_S)
        """At most one: the running job's, keyed by its id."""
        self.job_id: str | None = None
        self.signalled = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)

    def start(self) -> None:
        for job_id in self.store.requeue_running():
            self._event(job_id, "The server restarted: the job continues from its newest checkpoint")
        self.thread.start()

    def stop(self) -> None:
        """Stop taking jobs; a running worker saves a checkpoint and its job goes back to the queue."""
        self.stopping.set()
        self.thread.join()
        codes = self.workers.stop()
        if self.job_id is not None:
            self._finish(codes[self.job_id])

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._tick()
            except Exception:  # the queue must outlive one bad job: log it and go on
                log.exception("job scheduler")
            self.stopping.wait(self.limits.poll_s)

    def _tick(self) -> None:
        for job in self.store.jobs(status="validating_files", oldest_first=True, limit=1):
            self._validate(job)
        if self.job_id is not None:
            if self.workers.alive(self.job_id):
                if not self.signalled and self.store.job(self.job_id)["cancel_requested"]:
                    self.workers.signal(self.job_id)  # SIGTERM: stops at the next step, with a checkpoint
                    self.signalled = True
                return
            self._finish(self.workers.reap()[self.job_id])
        for job in self.store.jobs(status="queued", oldest_first=True, limit=1):
            self._launch(job["id"])

    def _validate(self, job: dict[str, Any]) -> None:
        """queued, or failed with the data check's FILE:LINE: field: message lines (file ids for paths)."""
        self._event(job["id"], "Validating training file: " + job["request"]["training_file"])
        error = python_grader_refusal(job["config"]["train"], self.allow_python_graders) \
            or check_job_files(job, self.home, self.tokenizer)
        if error is None:
            if self.store.move_job(job["id"], ("validating_files",), status="queued"):
                self._event(job["id"], "Files validated, moving job to queued state")
        elif self.store.move_job(job["id"], ("validating_files",), status="failed", finished_at=int(time.time()),
                                 error=error):
            self._event(job["id"], error["message"], level="error")

    def _launch(self, job_id: str) -> None:
        if not self.store.move_job(job_id, ("queued",), status="running"):
            return  # cancelled meanwhile
        refused = python_grader_refusal(self.store.job(job_id)["config"]["train"], self.allow_python_graders)
        if refused is not None:  # queued by a server started with --allow-python-graders
            fail(self.store, job_id, refused["code"], refused["message"], refused["param"])
            self._event(job_id, refused["message"], level="error")
            return
        self._event(job_id, "Fine-tuning job started")
        self.workers.start(job_id, "tunesmith.commands.job", [str(self.home), job_id], log_path(self.home, job_id),
                           env=self.worker_env)
        self.job_id, self.signalled = job_id, False

    def _finish(self, code: int) -> None:
        """The worker has exited with `code`: a job it left running was stopped (back to the queue when
        the server is stopping, cancelled when asked) or its worker died (failed, with the log's last lines)."""
        assert self.job_id is not None
        job_id, self.job_id = self.job_id, None
        job = self.store.job(job_id)
        if job["status"] != "running":
            self._event(job_id, f"The job {job['status']}", level="error" if job["status"] == "failed" else "info")
        elif job["cancel_requested"]:
            self.store.update_job(job_id, status="cancelled", finished_at=int(time.time()))
            self._event(job_id, "The job cancelled")
        elif self.stopping.is_set():
            self.store.update_job(job_id, status="queued")
            self._event(job_id, "The server stopped: the job is queued again and continues at the next start")
        else:
            fail(self.store, job_id, "worker_died", f"the training worker exited with status {code}: "
                                                    + log_tail(log_path(self.home, job_id)))

    def _event(self, job_id: str, message: str, level: str = "info") -> None:
        event_id = new_id("ftevent")
        self.store.add_event(job_id, event_id, event_id, level, message)


def check_job_files(job: dict[str, Any], home: Path, tokenizer: Any) -> dict[str, Any] | None:
    """Run `data check` on the job's files as `train` would (objective grpo: and every row lacking a field
    its grader reads); None when they pass, else OpenAI's error object with every problem as
    FILE:LINE: field: message, the file named by its id."""
    from rich.console import Console

    from ..config import config_from_dict
    from ..data.gate import check_data
    from ..data.issues import DataError
    from ..errors import TunesmithError
    from ..web.errors import RequestError

    config = config_from_dict(job["config"]["train"])
    names = {config.data: job["request"]["training_file"]}
    if config.eval:
        names[config.eval] = job["request"]["validation_file"]
    try:
        for path in names:
            file_path(home, names[path], Path(path).name)  # still ours, still inside --home
        check_data(config, tokenizer, Console(file=io.StringIO()))
        if config.objective == "grpo":
            from ..graders import check_data_fields, parse_grader

            issues = check_data_fields(parse_grader(config.grader), list(names))
            if issues:
                raise DataError(issues)
    except DataError as exc:
        lines = [_with_ids(str(issue), names) for issue in exc.issues[:20]]
        more = f" (and {len(exc.issues) - 20} more)" if len(exc.issues) > 20 else ""
        bad = next((p for p in names if exc.issues and exc.issues[0].file.endswith(Path(p).name)), config.data)
        param = "training_file" if bad == config.data else "validation_file"
        return {"code": f"invalid_{param}", "message": f"The {param.replace('_', ' ')} failed the data check: "
                + "; ".join(lines) + more, "param": param}
    except (TunesmithError, RequestError, OSError) as exc:
        return {"code": "invalid_file", "message": _with_ids(str(exc), names), "param": "training_file"}
    return None


def _with_ids(text: str, names: dict[str, str]) -> str:
    for path, file_id in names.items():
        text = text.replace(path, file_id)
    return text
