"""The transport conformance suite, on the in-memory transport and on real nats-server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tidings.testing.transport_conformance import TransportConformance, TransportFactory
from tidings.transports import MemoryBroker, MemoryTransport
from tidings.transports.nats import NatsTransport


class TestMemoryTransport(TransportConformance):
    @pytest.fixture
    def transport_factory(self) -> TransportFactory:
        broker = MemoryBroker()

        def make(**options: Any) -> MemoryTransport:
            return MemoryTransport(broker, **options)

        return make


class TestNatsTransport(TransportConformance):
    @pytest.fixture
    def transport_factory(self, nats_factory: Callable[..., NatsTransport]) -> TransportFactory:
        return nats_factory


class TestKafkaTransport(TransportConformance):
    @pytest.fixture
    def transport_factory(self, kafka_factory: Callable[..., Any]) -> TransportFactory:
        return kafka_factory
