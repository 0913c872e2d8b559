"""The package's public names: each one in `__all__` imports, and is what its docs say it is."""

import importlib

import pytest

import tunesmith


@pytest.mark.parametrize("name", tunesmith.__all__)
def test_every_public_name_imports(name):
    value = getattr(importlib.import_module("tunesmith"), name)
    assert value is not None and getattr(value, "__name__", name) == name
