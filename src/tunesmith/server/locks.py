"""Advisory file locks (fcntl.flock): one server per --home, one worker per job's run directory.
The kernel drops a lock when its process dies, however it dies, so a kill -9 leaves none behind."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ..errors import TunesmithError


class HomeInUse(TunesmithError, RuntimeError):
    label = "server error"


def hold_lock(path: Path, wait: bool) -> IO[str]:
    """Lock `path` (created if missing) and return the open file, which holds the lock until it is
    closed or the process ends. Without `wait`, a lock already held is a HomeInUse error naming the
    holder's pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise HomeInUse(f"{path.parent} is in use by another tunesmith server (pid {holder}); stop it, or "
                        "start this one with another --home") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
