"""The training worker: one job's `train(config, resume='auto')` in its own process, started by the
server's scheduler as `python -m tunesmith.commands.job HOME JOB_ID SERVER_PID`.

Its training events become the job's events and checkpoints in the database as they happen
(`server.worker.JobEvents`). SIGTERM (cancel, or the server stopping) stops it at the next step boundary
with a checkpoint; it exits as soon as the server process is gone (kill -9 included), so a restarted
server's new worker is the only one training the run, and it resumes from the newest checkpoint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..run import RunDir
from ..server.jobs import fine_tuned_name
from ..server.locks import hold_lock
from ..server.store import DB_NAME, Store
from ..server.worker import JobEvents, fail, register_result, runs_dir
from ..web.children import exit_with_parent


def run_job(store: Store, home: Path, job_id: str) -> None:
    """Train the job to the end (succeeded, its results registered), a cancel (cancelled), or a
    failure (failed, with the error); a stop without a cancel leaves it running for the scheduler."""
    from rich.console import Console

    from ..config import config_from_dict
    from ..errors import StoppedBeforeTraining, TunesmithError
    from .train import train

    job = store.job(job_id)
    assert job is not None
    config = config_from_dict(job["config"]["train"])
    console = Console(file=sys.stdout, width=120, color_system=None)
    try:
        result = train(config, show_progress=False, console=console, resume="auto",
                       subscribers=[JobEvents(store, job_id, config.objective)])
    except StoppedBeforeTraining:
        result = None
    except TunesmithError as exc:
        fail(store, job_id, "training_failed", str(exc))
        return
    if result is None or result.interrupted:
        if store.job(job_id)["cancel_requested"]:
            store.update_job(job_id, status="cancelled", finished_at=int(time.time()))
        return
    results = [register_result(store, home, RunDir(result.run_dir).write_step_metrics_csv(), "step_metrics.csv")]
    if job["config"]["evaluate"]:
        from .evaluate import evaluate_run

        evaluate_run(result.run_dir)
        results.append(register_result(store, home, result.run_dir / "report.html", "report.html"))
    store.update_job(job_id, status="succeeded", finished_at=int(time.time()), fine_tuned_model=fine_tuned_name(job),
                     trained_tokens=result.train_tokens, estimated_finish=None, result_files=results)


def main(argv: list[str] | None = None) -> None:
    home, job_id, parent = (argv or sys.argv[1:])[:3]
    exit_with_parent(int(parent))
    home_path = Path(home)
    # A worker of a killed server may take half a second to notice: wait for it to let go of the run.
    with hold_lock(runs_dir(home_path) / f"{job_id}.lock", wait=True):
        run_job(Store(home_path / DB_NAME), home_path, job_id)


if __name__ == "__main__":
    main()
