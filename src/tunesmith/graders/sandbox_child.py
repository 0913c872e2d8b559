"""The python grader's process: limits itself, loads the grader's source, then answers one JSON line per
sample on its own copy of stdout. Run as `python -I sandbox_child.py`, never imported by tunesmith.

Order matters: the limits and the network cut come before the user's code runs, and are set both
soft and hard, so that code cannot raise them again. The user's prints go to a buffer (kept for the
error report), never to the protocol's channel.
"""

import ctypes
import io
import json
import math
import numbers
import os
import resource
import signal
import sys
import traceback

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


def cut_network():
    """A network namespace of its own (no interface but a down loopback) where the kernel allows one,
    and in any case a socket module that refuses to make sockets. Returns how the network was cut."""
    libc = ctypes.CDLL(None, use_errno=True)
    how = None
    for flags, name in ((CLONE_NEWNET, "network namespace"), (CLONE_NEWUSER | CLONE_NEWNET, "user+network namespace")):
        if libc.unshare(flags) == 0:
            how = name
            break
    import _socket
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in python graders")

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse()

    for module in (socket, _socket):
        for name in ("socket", "create_connection", "getaddrinfo", "socketpair", "fromfd", "create_server"):
            if hasattr(module, name):
                setattr(module, name, NoSocket if name == "socket" else refuse)
    return how or "socket module disabled (no namespace allowed here)"


def limit(memory_bytes, disk_bytes):
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk_bytes, disk_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:  # die with the parent, so an endless grade cannot outlive a killed tunesmith
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):
        pass


def tail(text, chars):
    return text if len(text) <= chars else "..." + text[-chars:]


def answer(channel, message):
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def grade_one(grade, request, chars):
    printed = io.StringIO()
    sys.stdout = sys.stderr = printed
    try:
        value = grade(request["sample"], request["item"])
    except BaseException as exc:  # noqa: BLE001 - the user's code (sys.exit too): this sample's error
        # from the grader's own frame down: this file's frame says nothing to the grader's author
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
        if isinstance(exc, MemoryError):
            trace = trace.rstrip() + " (over the python grader's memory limit)"
        return {"error": tail(trace.strip(), chars), "printed": tail(printed.getvalue(), chars)}
    finally:
        sys.stdout = sys.stderr = sys.__stderr__
    try:
        reward = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except (OverflowError, ValueError):  # an int past float's range
        reward = math.nan
    if not math.isfinite(reward):
        return {"error": f"grade returned {tail(repr(value), 200)}, not a finite number", "printed": ""}
    return {"reward": reward}


def main():
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the user's code (and C libraries) cannot read or write the protocol
        os.dup2(null, fd)
    setup = json.loads(requests.readline())
    limit(setup["memory_bytes"], setup["disk_bytes"])
    network = cut_network()
    chars = setup["captured_chars"]
    namespace = {"__name__": "grader"}
    try:
        exec(compile(setup["source"], "<grader source>", "exec"), namespace)  # noqa: S102 - the sandboxed user grader
        grade = namespace["grade"]
    except BaseException:  # noqa: BLE001 - an import or top-level failure: every sample reports it
        answer(channel, {"error": "the grader's source failed to load:\n" + tail(traceback.format_exc(), chars)})
        return
    answer(channel, {"ready": True, "network": network})
    for line in requests:
        answer(channel, grade_one(grade, json.loads(line), chars))


if __name__ == "__main__":
    main()
