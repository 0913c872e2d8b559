"""Run a python grader's grade(sample, item) in a separate process with a time limit, a memory cap and
no network; every failure becomes that sample's error, and the next sample gets a fresh process.

One worker process serves many samples (starting Python and the grader's imports once, not per
sample). The worker (sandbox_child.py) sets RLIMIT_AS and RLIMIT_FSIZE on itself, hard, before the
grader's code runs; it cuts the network with a network namespace where the kernel allows one, and
otherwise disables the socket module (a guard against a grader's accidental calls, not a wall
against hostile code: run untrusted graders on a machine where namespaces are allowed, e.g. as
root or with unprivileged user namespaces). The wall-clock limit is kept here: a grade not
answered in time has its process group killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .limits import GraderLimits

CHILD = Path(__file__).with_name("sandbox_child.py")


@dataclass(frozen=True)
class SandboxAnswer:
    reward: float | None
    """None when the grade failed; `error` says why."""
    error: str | None = None


class PythonSandbox:
    """A python grader's worker process, restarted after a crash or a timeout. Use as a context manager."""

    def __init__(self, source: str, limits: GraderLimits = GraderLimits()) -> None:
        self.source, self.limits = source, limits
        self.process: subprocess.Popen[bytes] | None = None
        self.network: str | None = None
        """How the worker's network was cut (namespace or socket guard), once it has started."""
        self._load_error: str | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="tunesmith-grader-")

    def __enter__(self) -> PythonSandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._stop()
        self._workdir.cleanup()

    def grade(self, sample: dict[str, Any], item: dict[str, Any]) -> SandboxAnswer:
        """The grader's reward for one sample, or the error that stopped it."""
        try:
            request = (json.dumps({"sample": sample, "item": item}, ensure_ascii=False) + "\n").encode()
        except (TypeError, ValueError) as exc:
            return SandboxAnswer(None, f"the sample or row is not JSON-serialisable: {exc}")
        if self.process is None and self._load_error is None:
            self._start()
        if self._load_error is not None:
            return SandboxAnswer(None, self._load_error)
        reply = self._exchange(request, self.limits.python_timeout_s)
        if "reward" in reply:
            return SandboxAnswer(float(reply["reward"]))
        error = reply["error"]
        if reply.get("printed"):
            error += f"\n(printed: {reply['printed'].strip()})"
        return SandboxAnswer(None, error)

    def _start(self) -> None:
        """Start the worker and load the source; when that fails, `_load_error` says why, for every sample."""
        setup = {"source": self.source, "memory_bytes": self.limits.python_memory_bytes,
                 "disk_bytes": self.limits.python_disk_bytes, "captured_chars": self.limits.max_captured_chars}
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, cwd=self._workdir.name, start_new_session=True,  # own group: killed whole
            env={"PATH": os.environ.get("PATH", ""), "HOME": self._workdir.name, "LANG": "C.UTF-8"})
        reply = self._exchange((json.dumps(setup) + "\n").encode(), self.limits.python_timeout_s)
        if reply.get("ready"):
            self.network = reply.get("network")
            return
        self._stop()
        error = reply["error"]
        self._load_error = error if error.startswith("the grader's source") else f"loading the grader's source: {error}"

    def _exchange(self, request: bytes, timeout_s: float) -> dict[str, Any]:
        """Send one line, wait for one line; on a timeout or a dead worker, stop it and say why."""
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(request)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        line = _read_line(self.process.stdout.fileno(), time.monotonic() + timeout_s)
        if line is None:
            self._stop()
            return {"error": f"timed out: no answer within the python grader's limit of "
                             f"{self.limits.python_timeout_s:g} s per sample; its process was killed"}
        if not line:
            return self._died()
        return json.loads(line)

    def _died(self) -> dict[str, Any]:
        assert self.process is not None
        code = self.process.wait()
        self.process = None
        cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        hint = " (SIGKILL: often the memory limit)" if code == -signal.SIGKILL else ""
        return {"error": f"the python grader's process died ({cause}{hint}) before answering"}

    def _stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.process = None


def _read_line(fd: int, deadline: float) -> bytes | None:
    """One line from `fd` (b"" at end of file), or None when the deadline passes first."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b""
        data += chunk
    return data
