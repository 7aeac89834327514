"""Fixtures for the contract tests: a real nats-server (module-wide) on a free loopback port."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tidings.testing.nats_server import NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings

_streams = itertools.count(1)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer(name="tidings-contracts") as server:
        yield server


@pytest.fixture
def nats_factory(nats_server: NatsServer) -> Callable[..., NatsTransport]:
    """``nats_factory()``: transports on a stream and prefix of this test's own."""
    n = next(_streams)

    def make(**options: Any) -> NatsTransport:
        options.setdefault("prefix", f"c{n}")
        options.setdefault("stream", StreamSettings(name=f"C{n}"))
        options.setdefault("connect_timeout", 10.0)
        return NatsTransport(nats_server.url, **options)

    return make
