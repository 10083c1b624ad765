"""Fixtures shared by the unit tests."""

import pytest

from commands import names

TOKEN = "c0ffee"


@pytest.fixture
def fixed_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """Derived names with a known token instead of a random one, for exact comparisons."""
    monkeypatch.setattr(names, "token", lambda: TOKEN)
    return TOKEN
