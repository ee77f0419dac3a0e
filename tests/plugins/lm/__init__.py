"""Tests of the lm plugin (a package, so its conftest does not shadow tests/conftest.py)."""
