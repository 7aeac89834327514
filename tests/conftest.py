"""Shared fixtures: a bus, and the PostgreSQL server the tests use
(``TIDINGS_TEST_POSTGRES_URL`` when set, else one started from the ``pgserver`` wheel for
the session)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

import tidings


@pytest.fixture
def bus() -> Iterator[tidings.Bus]:
    """A fresh in-process bus, closed after the test."""
    with tidings.Bus() as bus:
        yield bus


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: TIDINGS_TEST_POSTGRES_URL, or one started from pgserver."""
    url = os.environ.get("TIDINGS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR in CI
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(  # type: ignore[attr-defined]
            tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop"
        )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
