"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tidings


@pytest.fixture
def bus() -> Iterator[tidings.Bus]:
    """A fresh in-process bus, closed after the test."""
    with tidings.Bus() as bus:
        yield bus
