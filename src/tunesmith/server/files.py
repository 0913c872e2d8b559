"""Uploaded files: unguessable ids, streamed to disk under --home with a size cap, and an id-to-path
mapping that never leaves --home. Files are data: read by the data package, never executed or unpickled."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..web.errors import RequestError
from ..web.ids import id_pattern, new_id

FILE_ID = id_pattern("file")
EXTENSIONS = (".jsonl", ".json", ".csv", ".txt", ".md")
"""Kept from the uploaded name, since the data package reads a file by its extension; others become .jsonl."""
PURPOSES = ("fine-tune",)
RESULTS_PURPOSE = "fine-tune-results"
"""A job's own outputs (its metrics CSV, the eval report), listed in `result_files`."""
CHUNK_BYTES = 1 << 20


def files_dir(home: Path) -> Path:
    return home / "files"


def stored_name(file_id: str, filename: str) -> str:
    """The name on disk: the id and, when the data package reads it, the upload's extension."""
    ext = Path(filename).suffix.lower()
    return file_id + (ext if ext in EXTENSIONS else ".jsonl")


def file_path(home: Path, file_id: str, stored: str) -> Path:
    """The file's path under HOME/files; an id that is not one of ours (`../x`, `/etc/passwd`) is a 404
    before any lookup, and a stored name is checked to stay inside the folder as well."""
    if not FILE_ID.fullmatch(file_id):
        raise RequestError(404, f"No such File object: {file_id}", "file_id", "file_not_found")
    folder = files_dir(home).resolve()
    path = (folder / stored).resolve()
    if path.parent != folder or not path.name.startswith(file_id):
        raise RequestError(404, f"No such File object: {file_id}", "file_id", "file_not_found")
    return path


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's File object."""
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": "processed",
            "status_details": None, "expires_at": None}


async def save_upload(upload: Any, home: Path, filename: str, purpose: str, max_bytes: int) -> dict[str, Any]:
    """Copy an uploaded part (starlette's UploadFile, spooled to disk while it arrived) into
    HOME/files in chunks, never whole in memory; written under a temporary name, fsynced and renamed,
    so a killed server leaves no half file under a real id. Returns the file's row."""
    file_id = new_id("file")
    folder = files_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    stored = stored_name(file_id, filename)
    staging = folder / f".{stored}.part"
    size = 0
    try:
        with open(staging, "wb") as out:
            while chunk := await upload.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise RequestError(413, f"the file is over the upload limit of {max_bytes} bytes", "file",
                                       "file_too_large")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, folder / stored)
    finally:
        staging.unlink(missing_ok=True)
    return {"id": file_id, "created_at": int(time.time()), "filename": Path(filename).name or stored,
            "stored": stored, "purpose": purpose, "bytes": size}
