"""NATS transports for the tests that take servers away (one killed and restarted, a
cluster's stream leader killed): settings that wait the outage out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.transports.nats import NatsTransport, StreamSettings

__all__ = ("outage_transport",)


def outage_transport(
    urls: str | Sequence[str], stream: str, *, replicas: int = 1, **options: Any
) -> NatsTransport:
    """A transport on the stream named ``stream`` (its subjects under ``stream.lower()``)
    that waits an outage out: publishes retried for up to 60 s, acks awaited 0.5 s at a
    time (1 s with ``replicas``, whose leader election takes longer, and then up to 30 s to
    connect); ``options`` override these."""
    settings: dict[str, Any] = {
        "prefix": stream.lower(),
        "stream": StreamSettings(name=stream, replicas=replicas),
        "ack_timeout": 0.5 if replicas == 1 else 1.0,
        "publish_timeout": 60.0,
    }
    if replicas > 1:
        settings["connect_timeout"] = 30.0
    settings.update(options)
    return NatsTransport(urls, **settings)
