"""The process's start: jemalloc (else tcmalloc) preloaded by one re-execution when installed, the
system's malloc otherwise or when asked, and never a loop."""

import subprocess
import sys

import pytest

from tunesmith import runtime
from tunesmith.runtime import preferred_allocator


@pytest.fixture
def libs(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.setattr(runtime.sys, "prefix", str(tmp_path / "env"))  # no allocator in the environment's lib
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return tmp_path


def test_jemalloc_is_preferred_to_tcmalloc_wherever_each_lies(libs):
    (libs / "a" / "libtcmalloc_minimal.so.4").touch()
    assert preferred_allocator({}, [libs / "a", libs / "b"]) == str(libs / "a" / "libtcmalloc_minimal.so.4")
    (libs / "b" / "libjemalloc.so.2").touch()
    assert preferred_allocator({}, [libs / "a", libs / "b"]) == str(libs / "b" / "libjemalloc.so.2")


def test_no_allocator_when_none_is_installed_asked_off_or_already_preloaded(libs, monkeypatch, capsys):
    assert preferred_allocator({}, [libs / "a"]) is None
    (libs / "a" / "libjemalloc.so.2").touch()
    assert preferred_allocator({"TUNESMITH_ALLOCATOR": "system"}, [libs / "a"]) is None
    # The re-executed process finds it preloaded: no second restart.
    assert preferred_allocator({"LD_PRELOAD": "/x/libjemalloc.so.2"}, [libs / "a"]) is None
    assert preferred_allocator({"LD_PRELOAD": "/x/libtcmalloc.so.4 /y/libz.so"}, [libs / "a"]) is None
    custom = libs / "b" / "libmine.so"
    custom.touch()
    assert preferred_allocator({"TUNESMITH_ALLOCATOR": str(custom)}, [libs / "a"]) == str(custom)
    assert preferred_allocator({"TUNESMITH_ALLOCATOR": str(libs / "missing.so")}, [libs / "a"]) is None
    assert "no such file" in capsys.readouterr().err
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert preferred_allocator({}, [libs / "a"]) is None


def test_start_re_executes_once_with_the_library_first_in_ld_preload(libs, monkeypatch):
    (libs / "a" / "libjemalloc.so.2").touch()
    monkeypatch.setattr(runtime, "LIBRARY_DIRS", (str(libs / "a"),))
    monkeypatch.setenv("LD_PRELOAD", "/opt/libother.so")
    calls = []

    def execve(path, args, env):
        calls.append((path, args, env["LD_PRELOAD"]))
        raise SystemExit(0)  # what follows an exec never runs

    monkeypatch.setattr(runtime.os, "execve", execve)
    with pytest.raises(SystemExit):
        runtime.start(["train", "x.yaml"])
    assert calls == [(sys.executable, [sys.executable, "-m", "tunesmith", "train", "x.yaml"],
                      f"{libs / 'a' / 'libjemalloc.so.2'} /opt/libother.so")]


def test_commands_that_only_run_a_model_keep_jemallocs_freed_pages_unless_the_user_configured_it():
    je, tc = "/usr/lib/libjemalloc.so.2", "/usr/lib/libtcmalloc.so.4"
    assert runtime.allocator_env({}, je, ["eval", "run"])["MALLOC_CONF"] == "dirty_decay_ms:-1"
    assert runtime.allocator_env({}, je, ["compare", "--run", "run"])["MALLOC_CONF"] == "dirty_decay_ms:-1"
    assert "MALLOC_CONF" not in runtime.allocator_env({}, je, ["train", "x.yaml"])  # training: the defaults
    assert "MALLOC_CONF" not in runtime.allocator_env({}, je, [])
    assert "MALLOC_CONF" not in runtime.allocator_env({}, tc, ["eval", "run"])  # not jemalloc's setting
    mine = runtime.allocator_env({"MALLOC_CONF": "narenas:2", "LD_PRELOAD": "/x.so"}, je, ["eval", "run"])
    assert mine["MALLOC_CONF"] == "narenas:2" and mine["LD_PRELOAD"] == f"{je} /x.so"


def test_the_installed_command_runs_with_and_without_an_allocator(tmp_path):
    """End to end, on this machine's libraries: `python -m tunesmith` answers either way (a missing
    or unloadable allocator never stops it)."""
    for allocator in ("auto", "system", str(tmp_path / "missing.so")):
        done = subprocess.run([sys.executable, "-m", "tunesmith", "--version"], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "TUNESMITH_ALLOCATOR": allocator}, timeout=60)
        assert done.returncode == 0 and "version" in done.stdout, (allocator, done.stderr)
