"""Fixtures for transport tests: a real nats-server (session-wide) on a free loopback port."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tidings.testing.nats_server import NatsCluster, NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings

from .group_processes import stop

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


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Any]:
    """One Tansu broker (Kafka-compatible, memory only) for the session; skips without it
    (fails under CI=true)."""
    from tidings.testing.kafka_broker import TansuBroker, find_tansu

    try:
        find_tansu()
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
    with TansuBroker() as broker:
        yield broker


@pytest.fixture
def kafka_factory(kafka_broker: Any) -> Callable[..., Any]:
    """``kafka_factory(**options)``: Kafka transports under a prefix of this test's own."""
    from tidings.transports.kafka import KafkaTransport

    n = next(_streams)

    def make(**options: Any) -> KafkaTransport:
        options.setdefault("prefix", f"k{n}")
        options.setdefault("metadata_refresh", 0.5)
        options.setdefault("session_timeout", 2.5)  # Tansu holds a join for half of it
        return KafkaTransport(kafka_broker.url, **options)

    return make


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """The worker processes a multi-process test starts (``group_processes.spawn``): the
    test appends them; those still running at its end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    stop(started)
