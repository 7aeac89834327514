"""The gateway's links to MQTT and AMQP brokers (:mod:`tidings.bridges`): its ``sources``
and the publishers of its ``mqtt`` and ``amqp`` targets.

- **Sources** take events in through the gateway's ``accept`` (durable in the log before
  the broker's message is acknowledged, idempotent on source and id, routed from the log
  like a POST). A message that cannot become an event goes to the bridges' dead-letter
  topic (MQTT) or the broker's dead-letter exchange (AMQP). An event whose id the log
  holds from another source is dead-lettered too (retrying cannot help).
- **Targets** publish through one bridge per broker (and, for AMQP, per exchange), made on
  the first send and kept until :meth:`Brokers.aclose`. A send returns once the broker
  acknowledged (PUBACK, publisher confirm); the route's ``retry`` and dead letter apply to
  its failures as to a webhook's.

Sources are read at start: a reload that changes them is logged as needing a restart.
Their counts are in ``GET /config`` (``sources``, :meth:`Brokers.describe_sources`) and
``/metrics`` (``tidings_gateway_source_*``, :mod:`tidings.server.telemetry`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from tidings.bridges import MalformedMessageError
from tidings.gateway.config import SourceConfig, TargetConfig

if TYPE_CHECKING:
    from tidings.bridges.amqp import AmqpBridge
    from tidings.bridges.mqtt import MqttBridge
    from tidings.event import Envelope

__all__ = ("Brokers",)

logger = logging.getLogger("tidings.gateway")

Accept = Callable[[Sequence["Envelope[Any]"]], Awaitable[object]]


class Brokers:
    """The broker sources and target publishers of one gateway.

    Args:
        accept: the gateway's ``accept`` (what sources feed).
        conflict: the exception ``accept`` raises for an id taken by another source
            (dead-lettered instead of retried).
    """

    def __init__(self, accept: Accept, conflict: type[Exception]) -> None:
        self._accept = accept
        self._conflict = conflict
        self.sources: list[MqttBridge | AmqpBridge] = []
        self._publishers: dict[tuple[str, str, str], MqttBridge | AmqpBridge] = {}
        self._lock = asyncio.Lock()

    async def _sink(self, envelopes: Sequence[Envelope[Any]]) -> None:
        try:
            await self._accept(envelopes)
        except self._conflict as exc:
            raise MalformedMessageError(f"{type(exc).__name__}: {exc}") from None

    async def start(self, sources: Sequence[SourceConfig]) -> None:
        """Start a bridge per source.

        Raises:
            TransportUnavailableError: a source's broker is unreachable (the sources
                started so far are stopped).
        """
        try:
            for index, source in enumerate(sources):
                bridge = _source_bridge(source, self._sink, f"source-{index}-{source.kind}")
                await bridge.start()
                self.sources.append(bridge)
        except BaseException:
            await self.stop_sources()
            raise

    def describe_sources(self) -> list[dict[str, Any]]:
        """Each source's status and counts, in config order (:meth:`Bridge.status
        <tidings.bridges.Bridge.status>`: ``received``, ``accepted``, ``dead_lettered``,
        ``acknowledged``, ``retried``, ``reconnects``, ``connected``...)."""
        return [bridge.status() for bridge in self.sources]

    async def stop_sources(self) -> None:
        """Stop taking events in (what is not acknowledged stays with the brokers)."""
        sources, self.sources = self.sources, []
        for bridge in sources:
            await bridge.aclose()

    async def send(self, target: TargetConfig, envelope: Envelope[Any]) -> None:
        """Publish ``envelope`` to ``target``'s broker and wait for its acknowledgement.

        Raises:
            TransportUnavailableError, PublishError, PublishOutcomeUnknownError: as the
                bridge's ``start`` and ``publish`` say.
        """
        bridge = await self._publisher(target)
        if target.kind == "mqtt":
            await bridge.publish(envelope, target.address)
        else:
            await bridge.publish(envelope, target.routing_key)

    async def _publisher(self, target: TargetConfig) -> MqttBridge | AmqpBridge:
        assert target.url is not None
        key = (target.kind, target.url, target.address if target.kind == "amqp" else "")
        found = self._publishers.get(key)
        if found is not None:
            return found
        async with self._lock:
            found = self._publishers.get(key)
            if found is None:
                found = _target_bridge(target)
                await found.start()
                self._publishers[key] = found
            return found

    async def aclose(self) -> None:
        """Stop the sources and close the publishers."""
        await self.stop_sources()
        publishers = list(self._publishers.values())
        self._publishers.clear()
        for bridge in publishers:
            await bridge.aclose()


def _source_bridge(
    source: SourceConfig, sink: Callable[[Sequence[Envelope[Any]]], Awaitable[None]], name: str
) -> MqttBridge | AmqpBridge:
    options: dict[str, Any] = {"sink": sink, "name": name}
    if source.wrap_type is not None:
        options["wrap_type"] = source.wrap_type
    if source.types is not None:
        options["types"] = source.types
    if source.kind == "mqtt":
        from tidings.bridges.mqtt import MqttBridge

        if source.client_id is not None:
            options["client_id"] = source.client_id
        return MqttBridge(
            url=source.url, subscribe=source.subscribe, protocol=source.protocol, **options
        )
    from tidings.bridges.amqp import AmqpBridge

    if source.exchange is not None:
        options["exchange"] = source.exchange
    if source.dead_letter_exchange is not None:
        options["dead_letter_exchange"] = source.dead_letter_exchange
    return AmqpBridge(url=source.url, queues=source.queues, bind=source.bind, **options)


def _target_bridge(target: TargetConfig) -> MqttBridge | AmqpBridge:
    assert target.url is not None
    if target.kind == "mqtt":
        from tidings.bridges.mqtt import MqttBridge

        return MqttBridge(url=target.url, publish_timeout=target.timeout, name="target-mqtt")
    from tidings.bridges.amqp import AmqpBridge

    return AmqpBridge(
        url=target.url,
        exchange=target.address,
        declare=False,
        dead_letter_exchange=None,
        publish_timeout=target.timeout,
        name="target-amqp",
    )
