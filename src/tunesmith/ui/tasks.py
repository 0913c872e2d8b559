"""The page's long tasks on a finished job's run: `compare` (fine-tuning vs RAG) and the merged and GGUF
exports, each in a process of its own, started by the server as
`python -m tunesmith.ui.tasks RUN KIND ARGS_JSON SERVER_PID`.

A task's state lives in the run directory, RUN/ui-tasks/KIND.json (state, its arguments, the lines it
logged, its result or error), so that a restarted server shows a finished task as it was. The process
ends with the server (kill -9 included, as a training worker does); a task left `running` by a server
that is gone reads as `interrupted`, and the page offers to start it again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..files import write_atomic
from ..web.children import Children, exit_with_parent, log_tail

KINDS = ("compare", "export-merged", "export-gguf")
LOG_LINES_KEPT = 40
"""Lines of a task's log kept in its state file (the page shows them as its progress)."""
STOP_WAIT_S = 10.0


def task_path(run: Path, kind: str) -> Path:
    return run / "ui-tasks" / f"{kind}.json"


def read_task(run: Path, kind: str) -> dict[str, Any] | None:
    path = task_path(run, kind)
    return json.loads(path.read_text()) if path.is_file() else None


def write_task(run: Path, kind: str, state: dict[str, Any]) -> None:
    write_atomic(task_path(run, kind), json.dumps(state))


class TaskRunner:
    """The server's task processes, one per (run, kind); their state is read from the run directory."""

    def __init__(self) -> None:
        self.children: Children[tuple[Path, str]] = Children(STOP_WAIT_S)

    def start(self, run: Path, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        self.reap()
        state = {"kind": kind, "state": "running", "args": args, "started": time.time(), "finished": None,
                 "log": [], "result": None, "error": None}
        write_task(run, kind, state)
        self.children.start((run, kind), "tunesmith.ui.tasks", [str(run), kind, json.dumps(args)],
                        task_path(run, kind).with_suffix(".log"), append=False)
        return state

    def running(self, run: Path, kind: str) -> bool:
        """Whether the task runs: its process is alive and has not yet recorded how it ended (a process
        lingers a moment after that, tearing torch down; it does not hold the next task back)."""
        self.reap()
        state = read_task(run, kind)
        return (run, kind) in self.children and state is not None and state["state"] == "running"

    def busy(self) -> bool:
        """Whether any task runs now: one at a time, beside training, on a small machine."""
        return any(self.running(run, kind) for run, kind in list(self.children))

    def state(self, run: Path, kind: str) -> dict[str, Any] | None:
        """The task's state; `running` with no process of this server behind it is `interrupted`."""
        self.reap()
        state = read_task(run, kind)
        if state is not None and state["state"] == "running" and (run, kind) not in self.children:
            state = {**state, "state": "interrupted",
                     "error": "the server stopped while this ran: start it again"}
        return state

    def reap(self) -> None:
        """Forget finished processes; one that died without saying how (killed, crashed) is failed,
        with the last lines of its output."""
        for (run, kind), code in self.children.reap().items():
            state = read_task(run, kind)
            if state is not None and state["state"] == "running":
                write_task(run, kind, {**state, "state": "failed", "finished": time.time(),
                                       "error": f"the task exited with status {code}: "
                                                + log_tail(task_path(run, kind).with_suffix(".log"))})

    def stop(self) -> None:
        self.children.stop()


def run_task(run: Path, kind: str, args: dict[str, Any]) -> None:
    """Do the task, recording its log lines as they come and its result or error at the end."""
    state = read_task(run, kind) or {"kind": kind, "args": args, "log": []}

    def log(line: str) -> None:
        state["log"] = [*state["log"], line][-LOG_LINES_KEPT:]
        write_task(run, kind, state)

    try:
        result = _compare(run, args, log) if kind == "compare" else _export(run, kind.split("-", 1)[1], args, log)
    except Exception as exc:  # any failure is the task's result: the page shows it
        state.update(state="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}")
    else:
        state.update(state="succeeded", finished=time.time(), result=result)
    write_task(run, kind, state)


def _compare(run: Path, args: dict[str, Any], log: Any) -> dict[str, Any]:
    from ..commands.compare import compare_run
    from ..settings import CompareSettings, RetrievalSettings

    settings = CompareSettings(limit=args["limit"], seen=args["seen"], max_new_tokens=args["max_new_tokens"],
                               retrieval=RetrievalSettings(top_k=args["top_k"]))
    result = compare_run(run, args["knowledge"], None, settings, log=log)  # knowledge None: a RAFT run's own
    return {"choice": result["choice"], "seconds": result["seconds"]}  # the figures stay in compare.json


def _export(run: Path, fmt: str, args: dict[str, Any], log: Any) -> dict[str, Any]:
    from ..export.exporter import export_run
    from ..settings import DEFAULT_GGUF_TYPE

    result = export_run(run, fmt, overwrite=True, gguf_type=args.get("gguf_type") or DEFAULT_GGUF_TYPE, log=log)
    return {"output": result.output.name, "files": list(result.files), "max_abs_diff": result.max_abs_diff,
            "relative_diff": result.relative_diff}


def main(argv: list[str] | None = None) -> None:
    run, kind, args, parent = (argv or sys.argv[1:])[:4]
    exit_with_parent(int(parent))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(1))  # the server stopping: the state reads `interrupted`
    run_task(Path(run), kind, json.loads(args))


if __name__ == "__main__":
    main()
