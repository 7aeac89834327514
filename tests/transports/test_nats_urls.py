"""A malformed NATS server URL fails at construction, typed, before any connection."""

from __future__ import annotations

import pytest

from tidings.exceptions import InvalidTransportURLError
from tidings.transports.nats import NatsTransport


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nats//127.0.0.1", "names no scheme"),
        ("127.0.0.1:4222", "names no scheme"),
        ("http://127.0.0.1:4222", "http:// is not a NATS scheme"),
        ("nats://127.0.0.1:notaport", "Port could not be cast"),
        ("nats://", "names no host"),
    ],
)
def test_a_malformed_server_url_is_invalid_at_once(url: str, fragment: str) -> None:
    with pytest.raises(InvalidTransportURLError, match=fragment) as caught:
        NatsTransport(url)
    assert caught.value.url == url
    assert isinstance(caught.value, ValueError)


def test_every_url_of_a_cluster_is_checked() -> None:
    with pytest.raises(InvalidTransportURLError, match="http"):
        NatsTransport(["nats://127.0.0.1:4222", "http://127.0.0.1:8222"])
    with pytest.raises(InvalidTransportURLError, match="no NATS server URL"):
        NatsTransport([])


def test_the_accepted_schemes() -> None:
    for url in ("nats://127.0.0.1:4222", "tls://h:4222", "ws://h:80", "wss://h", "NATS://h"):
        assert NatsTransport(url).servers == (url,)
