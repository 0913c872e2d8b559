"""The `tunesmith` process's start: the memory allocator it runs on, then the CLI.

glibc's malloc keeps the memory a training step frees in holes that the next step's differently
sized tensors do not fit, so a run's heap grows step after step: on the bench's varied-length data
(`bench/bench_train.py --data varlen`, 30 LoRA steps, 2 cores) the process peaked at 4.11 GiB with
2.36 GiB of it free inside the heap, and its last third of steps ran at 204 tokens/s against 245 in
steps 2-10. jemalloc, preloaded, peaked at 2.68 GiB at 259 tokens/s in the last third, the same
losses. An allocator can only be chosen before the process starts, so `tunesmith` re-executes itself
once with `LD_PRELOAD` when it finds jemalloc (or else tcmalloc) installed (Debian/Ubuntu:
`apt-get install libjemalloc2`; `make setup` installs it where it can). Nothing depends on it:
without one, or with `TUNESMITH_ALLOCATOR=system`, tunesmith runs on the system's malloc; a path in
`TUNESMITH_ALLOCATOR` names the library to use.

The commands that only run a trained model (`INFERENCE_COMMANDS`) also ask jemalloc to keep the
pages it frees (`INFERENCE_MALLOC_CONF`). By default it hands every large freed block back to the
kernel at once, and an eval's next batch faults the same ~100 MB of logits in again: scoring the
demo's 50 held-out examples took 14.6-19.0 s against 11.8-14.3 s on glibc, with 4.6-5.0 million
page faults against 1.4 million. Keeping the pages: 11.6-12.7 s, 0.3 million faults; the whole eval
peaks at 1.96 GiB against 1.49 GiB. Training keeps jemalloc's defaults: there the same setting
gained 8% in speed and cost 0.74 GiB of peak memory (3.42 against 2.68 GiB, the bench's 30 varlen
steps). A MALLOC_CONF of the user's own is left as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ALLOCATORS = ("libjemalloc.so.2", "libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
"""Preloaded by name, in this order of preference (jemalloc measured above; tcmalloc not measured
as well, and used only where jemalloc is missing)."""
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                "/usr/local/lib", "/opt/homebrew/lib")
"""Where distributions install them; the environment's own lib (conda's) is searched first."""


INFERENCE_COMMANDS = frozenset({"eval", "compare", "generate", "chat", "serve", "export"})
"""Commands that decode and score but never train (the jobs server and the UI start training)."""
INFERENCE_MALLOC_CONF = "dirty_decay_ms:-1"
"""jemalloc keeps freed pages for reuse (its large-block arena follows this default too)."""


def preferred_allocator(environ: Mapping[str, str], dirs: Sequence[str | Path] | None = None) -> str | None:
    """The allocator library to preload into a re-executed tunesmith, or None to run as we are:
    off Linux, with TUNESMITH_ALLOCATOR=system, when one is preloaded already, or when none is found."""
    choice = environ.get("TUNESMITH_ALLOCATOR", "auto")
    preloaded = environ.get("LD_PRELOAD", "")
    if (choice == "system" or not sys.platform.startswith("linux")
            or any(a.split(".so")[0] in preloaded for a in ALLOCATORS)):
        return None
    if choice != "auto":
        if Path(choice).is_file():
            return choice
        print(f"tunesmith: TUNESMITH_ALLOCATOR={choice}: no such file; running on the system's malloc "
              "(set it to a library's path, auto, or system)", file=sys.stderr)
        return None
    search = [Path(sys.prefix) / "lib", *map(Path, dirs if dirs is not None else LIBRARY_DIRS)]
    return next((str(d / name) for name in ALLOCATORS for d in search if (d / name).is_file()), None)


def allocator_env(environ: Mapping[str, str], library: str, argv: Sequence[str]) -> dict[str, str]:
    """The environment to re-execute with: `library` first in LD_PRELOAD, and for a command in
    `INFERENCE_COMMANDS` on jemalloc its MALLOC_CONF, unless the user set one."""
    env = {**environ, "LD_PRELOAD": " ".join(filter(None, [library, environ.get("LD_PRELOAD", "")]))}
    inference = bool(argv) and argv[0] in INFERENCE_COMMANDS
    if inference and "jemalloc" in Path(library).name and "MALLOC_CONF" not in environ:
        env["MALLOC_CONF"] = INFERENCE_MALLOC_CONF
    return env


def start(argv: Sequence[str] | None = None) -> None:
    """The console script: re-execute with the preferred allocator preloaded (once: the new process
    finds it preloaded), then run the CLI."""
    argv = list(sys.argv[1:] if argv is None else argv)
    library = preferred_allocator(os.environ)
    if library is not None:
        try:
            os.execve(sys.executable, [sys.executable, "-m", "tunesmith", *argv],
                      allocator_env(os.environ, library, argv))
        except OSError as error:  # the interpreter cannot be re-executed here: run on as we are
            print(f"tunesmith: could not restart with {library} ({error}); running on the system's malloc",
                  file=sys.stderr)
    from .cli import main

    main(args=argv, prog_name="tunesmith")
