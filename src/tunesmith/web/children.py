"""The server's worker processes (a job's training, a page's compare or export), one supervisor for
all: each is started as `python -m MODULE ARGS... SERVER_PID` with its output appended to a log, is
stopped with SIGTERM (then killed past a grace), and ends by itself when the server is gone, kill -9
included (`exit_with_parent`, called first thing in the child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

PARENT_POLL_S = 0.5
"""How often a child checks that the server is still its parent."""
Key = TypeVar("Key", bound=Hashable)


class Children(Generic[Key]):
    """The live child processes of this server, by key (a job id, a (run, task) pair)."""

    def __init__(self, stop_wait_s: float) -> None:
        self.stop_wait_s = stop_wait_s
        """On `stop`, how long a child has after SIGTERM (to save a checkpoint) before it is killed."""
        self.live: dict[Key, subprocess.Popen[bytes]] = {}

    def start(self, key: Key, module: str, args: list[str], log: Path, append: bool = True,
              env: dict[str, str] | None = None) -> None:
        """Run `python -m module *args SERVER_PID`, its stdout and stderr into `log` (appended across
        restarts, or started afresh), with `env` added to this process's environment."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab" if append else "wb") as out:  # the child has its own copy of the descriptor
            self.live[key] = subprocess.Popen([sys.executable, "-m", module, *args, str(os.getpid())],
                                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                              env={**os.environ, **env} if env else None)

    def __contains__(self, key: object) -> bool:
        return key in self.live

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self.live))

    def alive(self, key: Key) -> bool:
        return key in self.live and self.live[key].poll() is None

    def signal(self, key: Key, sig: int = signal.SIGTERM) -> None:
        self.live[key].send_signal(sig)

    def reap(self) -> dict[Key, int]:
        """The children that have exited, with their exit status; forgotten from now on."""
        ended = {key: proc.returncode for key, proc in list(self.live.items()) if proc.poll() is not None}
        for key in ended:
            del self.live[key]
        return ended

    def stop(self) -> dict[Key, int]:
        """SIGTERM every child, wait for each up to `stop_wait_s`, kill the late; their exit statuses."""
        for proc in self.live.values():
            proc.send_signal(signal.SIGTERM)  # a child that has exited already is not signalled
        codes = {}
        for key, proc in self.live.items():
            try:
                codes[key] = proc.wait(timeout=self.stop_wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[key] = proc.wait()
        self.live.clear()
        return codes


def log_tail(log: Path, lines: int = 5) -> str:
    """The last lines of a child's log, joined with ' | ': what a failure message quotes."""
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def exit_with_parent(parent: int) -> None:
    """Exit at once when the server process is gone (re-parented: getppid changes), checked twice a
    second in a daemon thread; a kill -9 of the server thus ends its children too."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
