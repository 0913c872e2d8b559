"""Stopping at a step boundary: SIGTERM/SIGINT set a flag, and every rank stops at the same step."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

import torch

STOPPING_MESSAGE = "\n{signal}: stopping after this step (saving a checkpoint)... Ctrl-C again stops at once\n"


class StopFlag:
    """SIGTERM/SIGINT set a flag that the loop reads at the next step boundary, and say so at once
    (a raw write to stderr: no lock a print in progress could hold). A second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        with contextlib.suppress(OSError):
            os.write(2, STOPPING_MESSAGE.format(signal=self.requested).encode())

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_at_once() -> Iterator[None]:
    """Before the first step there is nothing to save, so SIGTERM stops at once, as Ctrl-C does: both
    raise KeyboardInterrupt where the recipe can clean up (instead of SIGTERM's silent death)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def agree_to_stop(stop: StopFlag, accelerator: Any) -> bool:
    """Whether any rank was asked to stop. Ranks may get the signal at different steps, so with
    several processes they sum their flags (one collective per step) and stop together."""
    stopping = stop.requested is not None
    if accelerator.num_processes > 1:
        flag = torch.tensor(float(stopping), device=accelerator.device)
        stopping = bool(accelerator.reduce(flag, "sum") > 0)
    return stopping
