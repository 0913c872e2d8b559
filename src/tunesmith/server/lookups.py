"""A file or a job named in a request's path, found in the store or refused with OpenAI's 404: the
one lookup per resource that the server's routes and the page's (ui/) use."""

from __future__ import annotations

from typing import Any

from ..web.errors import RequestError
from ..web.ids import lookup
from .files import FILE_ID
from .jobs import JOB_ID
from .store import Store


def find_file(store: Store, file_id: str) -> dict[str, Any]:
    """The file's row; 404 `file_not_found` for an id that is not ours or is not in the store."""
    return lookup(file_id, FILE_ID, store.file,
                  RequestError(404, f"No such File object: {file_id}", "file_id", "file_not_found"))


def find_job(store: Store, job_id: str) -> dict[str, Any]:
    """The job's row; 404 `job_not_found` for an id that is not ours or is not in the store."""
    return lookup(job_id, JOB_ID, store.job,
                  RequestError(404, f"No fine-tuning job found with id {job_id!r}", "job_id", "job_not_found"))
