"""The server's state in SQLite (standard library): files, jobs, their events and checkpoints.

One database file under --home, in WAL mode so the worker process writes events while the server
reads them. Every call opens its own short connection: the server's threads and the worker never
share one, and a killed process leaves no transaction half done (SQLite rolls it back).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import TunesmithError

DB_NAME = "tunesmith.db"
"""The database's file name in --home."""
SCHEMA_VERSION = 1
"""PRAGMA user_version of a database this code writes; another version is refused, not guessed at."""
SCHEMA = """
CREATE TABLE files (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
    filename TEXT NOT NULL, stored TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
    status TEXT NOT NULL, request TEXT NOT NULL, config TEXT NOT NULL, fine_tuned_model TEXT, trained_tokens INTEGER,
    estimated_finish INTEGER, finished_at INTEGER, error TEXT, result_files TEXT NOT NULL DEFAULT '[]',
    cancel_requested INTEGER NOT NULL DEFAULT 0);
CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL, key TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT,
    UNIQUE (job_id, key));
CREATE TABLE checkpoints (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
    step INTEGER NOT NULL, created_at INTEGER NOT NULL, metrics TEXT NOT NULL, UNIQUE (job_id, step));
CREATE INDEX events_by_job ON events (job_id, seq);
"""
ACTIVE = ("validating_files", "queued", "running")
"""Statuses of a job that is not finished."""
STATUSES = (*ACTIVE, "succeeded", "failed", "cancelled")


class StoreError(TunesmithError, RuntimeError):
    label = "server error"


class Store:
    """The database at `path`, created with the schema on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.execute("PRAGMA journal_mode=WAL")  # persistent: set once for the file
                db.executescript(SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            elif version != SCHEMA_VERSION:
                raise StoreError(f"{path} has schema version {version}; this tunesmith reads version "
                                 f"{SCHEMA_VERSION}: use the tunesmith that made it, or a new --home")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:  # one transaction: committed on success, rolled back on an exception
                yield db
        finally:
            db.close()

    # --- files

    def add_file(self, row: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT INTO files (id, created_at, filename, stored, purpose, bytes) "
                       "VALUES (:id, :created_at, :filename, :stored, :purpose, :bytes)", row)

    def file(self, file_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            found = db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return dict(found) if found else None

    def files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM files WHERE ? IS NULL OR purpose = ? ORDER BY seq DESC",
                              (purpose, purpose)).fetchall()
        return [dict(r) for r in rows]

    def delete_file(self, file_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    # --- jobs

    def add_job(self, job_id: str, request: dict[str, Any], config: dict[str, Any]) -> None:
        """A new job, validating its files; `config` is what the worker needs (the TrainConfig), fixed
        now so that a restart with other flags resumes the job as it was created."""
        with self._db() as db:
            db.execute("INSERT INTO jobs (id, created_at, status, request, config) "
                       "VALUES (?, ?, 'validating_files', ?, ?)",
                       (job_id, int(time.time()), json.dumps(request), json.dumps(config)))

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            found = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(found) if found else None

    def jobs(self, after: str | None = None, limit: int | None = None, status: str | None = None,
             oldest_first: bool = False) -> list[dict[str, Any]]:
        """Jobs newest first (OpenAI's order) or oldest first (the queue's), after the job `after`."""
        order = "ASC" if oldest_first else "DESC"
        where, params = _after("jobs", after, oldest_first)
        if status is not None:
            where, params = where + " AND status = ?", [*params, status]
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY seq {order} LIMIT ?",
                              [*params, -1 if limit is None else limit]).fetchall()
        return [_job(r) for r in rows]

    def count_jobs(self, statuses: tuple[str, ...]) -> int:
        with self._db() as db:
            marks = ",".join("?" * len(statuses))
            return db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", statuses).fetchone()[0]

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set columns of a job; dict and list values are stored as JSON."""
        self.move_job(job_id, STATUSES, **fields)

    def move_job(self, job_id: str, statuses: tuple[str, ...], **fields: Any) -> bool:
        """`update_job` only while the job is in one of `statuses` (a cancel and the scheduler may race);
        whether it was."""
        values = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
        marks = ",".join("?" * len(statuses))
        with self._db() as db:
            moved = db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in values)} "
                               f"WHERE id = ? AND status IN ({marks})", [*values.values(), job_id, *statuses])
            return moved.rowcount == 1

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job: one not started is cancelled now ('cancelled'); a running one is marked, and the
        scheduler stops its worker at the next step with a checkpoint ('cancelling'); a finished one
        cannot be (None)."""
        if self.move_job(job_id, ("validating_files", "queued"), status="cancelled", finished_at=int(time.time())):
            return "cancelled"
        if self.move_job(job_id, ("running",), cancel_requested=1):
            return "cancelling"
        return None

    def fine_tuned_models(self) -> list[str]:
        """The served names of succeeded jobs, oldest first."""
        with self._db() as db:
            rows = db.execute("SELECT fine_tuned_model FROM jobs WHERE status = 'succeeded' ORDER BY seq").fetchall()
        return [r[0] for r in rows]

    def requeue_running(self) -> list[str]:
        """After a crash or kill of the server: jobs left running go back to the queue (their run
        directories resume from the newest checkpoint); returns their ids."""
        with self._db() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'running' ORDER BY seq")]
            db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'")
        return ids

    # --- events and checkpoints

    def add_event(self, job_id: str, event_id: str, key: str, level: str, message: str, kind: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        """Record an event under `key`, unique per job: a step recomputed after a resume replaces its
        earlier event's figures (in place, keeping its position) instead of adding a second one."""
        with self._db() as db:
            db.execute("INSERT INTO events (id, job_id, key, created_at, level, message, type, data) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, key) DO UPDATE SET "
                       "message = excluded.message, data = excluded.data, created_at = excluded.created_at",
                       (event_id, job_id, key, int(time.time()), level, message, kind,
                        None if data is None else json.dumps(data)))

    def events(self, job_id: str, after: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """A job's events newest first (OpenAI's order), after the event `after`."""
        where, params = _after("events", after, False)
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM events WHERE job_id = ? AND {where} ORDER BY seq DESC LIMIT ?",
                              [job_id, *params, -1 if limit is None else limit]).fetchall()
        return [{**dict(r), "data": json.loads(r["data"]) if r["data"] else None} for r in rows]

    def add_checkpoint(self, job_id: str, checkpoint_id: str, step: int, metrics: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT INTO checkpoints (id, job_id, step, created_at, metrics) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (job_id, step) DO UPDATE SET metrics = excluded.metrics",
                       (checkpoint_id, job_id, step, int(time.time()), json.dumps(metrics)))

    def checkpoints(self, job_id: str, after: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        where, params = _after("checkpoints", after, False)
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM checkpoints WHERE job_id = ? AND {where} ORDER BY seq DESC LIMIT ?",
                              [job_id, *params, -1 if limit is None else limit]).fetchall()
        return [{**dict(r), "metrics": json.loads(r["metrics"])} for r in rows]


def _after(table: str, after: str | None, ascending: bool) -> tuple[str, list[Any]]:
    """The WHERE clause of a page starting past the row with id `after` (none: from the start)."""
    if after is None:
        return "1", []
    return f"seq {'>' if ascending else '<'} (SELECT seq FROM {table} WHERE id = ?)", [after]


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["request"] = json.loads(job["request"])
    job["error"] = json.loads(job["error"]) if job["error"] else None
    job["result_files"] = json.loads(job["result_files"])
    job["config"] = json.loads(job["config"])
    return job
