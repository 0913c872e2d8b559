"""The commands' recipes, one module per command (`tunesmith.cli` parses flags and calls them). Nothing
below this layer imports from it (tests/test_architecture.py)."""
