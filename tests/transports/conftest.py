"""Fixtures for transport tests: a real nats-server (session-wide) on a free loopback port."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tidings.testing.nats_server import NatsCluster, NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings

_streams = itertools.count(1)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server with JetStream for the session, in a temporary directory."""
    with NatsServer(name="tidings-tests") as server:
        yield server


@pytest.fixture
def nats_factory(nats_server: NatsServer) -> Callable[..., NatsTransport]:
    """``nats_factory(**options)``: transports on a stream and prefix of this test's own."""
    n = next(_streams)

    def make(**options: Any) -> NatsTransport:
        options.setdefault("prefix", f"t{n}")
        options.setdefault("stream", StreamSettings(name=f"T{n}"))
        options.setdefault("connect_timeout", 10.0)
        return NatsTransport(nats_server.url, **options)

    return make


@pytest.fixture
def own_server() -> Iterator[NatsServer]:
    """A nats-server of the test's own, which the test may kill and restart."""
    with NatsServer(name="own") as server:
        yield server


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster of the test's own (for failover tests)."""
    with NatsCluster(3) as started:
        yield started
