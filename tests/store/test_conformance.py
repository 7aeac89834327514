"""Every store passes the shared conformance suite."""

from __future__ import annotations

import pytest

from tidings.testing.store_conformance import StoreConformance, StoreHarness


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def harness(self, memory_harness: StoreHarness) -> StoreHarness:
        return memory_harness


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def harness(self, sqlite_harness: StoreHarness) -> StoreHarness:
        return sqlite_harness


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def harness(self, postgres_harness: StoreHarness) -> StoreHarness:
        return postgres_harness
