"""Validation at a transport's edges: :class:`ValidatingTransport`.

Wraps any :class:`~tidings.transports.base.Transport` so that, against the registered
schemas a :class:`~tidings.contracts.Validator` finds:

- **sending** (``publish``, ``send``, and the bus's refusal check ``check_envelope``, which
  ``Bus.publish`` / ``Bus.emit`` run before the write-ahead append and the send) raises
  :class:`~tidings.contracts.SchemaViolationError` before anything is sent or stored;
- **receiving**: an event that breaks its schema never reaches the handler; it goes to
  the transport's dead letters at once (the violation is a permanent error: no retries),
  with the violation as the reason (field and rule named).

Both are counted in :attr:`Validator.violations` (boundaries ``publish`` and
``transport``). Everything else is the wrapped transport's, unchanged.

A bus validates what it publishes in every mode with ``Bus(..., validator=...)``; give it
the validator this transport wraps and each published event is still checked once (a
validator skips the envelope it found valid last).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from tidings.clock import HybridClock
from tidings.contracts.validation import Validator
from tidings.event import Envelope
from tidings.transports.base import (
    DeadLetterRecord,
    DeliveryPolicy,
    Message,
    MessageHandler,
    PublishAck,
    PublishErrorHook,
    Transport,
    TransportFeatures,
    TransportSubscription,
)

__all__ = ("ValidatingTransport",)


class ValidatingTransport(Transport):
    """``inner``, with every event sent and received checked by ``validator``."""

    def __init__(self, inner: Transport, validator: Validator) -> None:
        self.inner = inner
        self.validator = validator

    # the attributes the bus reads and sets are the wrapped transport's
    @property
    def system(self) -> str:
        return self.inner.system

    @system.setter
    def system(self, value: str) -> None:
        self.inner.system = value

    @property
    def features(self) -> TransportFeatures:
        return self.inner.features

    @features.setter
    def features(self, value: TransportFeatures) -> None:
        self.inner.features = value

    @property
    def clock(self) -> HybridClock:
        return self.inner.clock

    @clock.setter
    def clock(self, value: HybridClock) -> None:
        self.inner.clock = value

    @property
    def policy(self) -> DeliveryPolicy:
        return self.inner.policy

    @policy.setter
    def policy(self, value: DeliveryPolicy) -> None:
        self.inner.policy = value

    @property
    def on_publish_error(self) -> PublishErrorHook | None:
        return self.inner.on_publish_error

    @on_publish_error.setter
    def on_publish_error(self, value: PublishErrorHook | None) -> None:
        self.inner.on_publish_error = value

    def destination(self, topic: str) -> str:
        return self.inner.destination(topic)

    @property
    def server(self) -> tuple[str, int] | None:
        return self.inner.server

    @property
    def client_id(self) -> str | None:
        return self.inner.client_id

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self, timeout: float = 10.0) -> None:
        await self.inner.aclose(timeout)

    def check_envelope(self, envelope: Envelope[Any]) -> None:
        """Raise for an event breaking its schema, then as the wrapped transport does.

        Raises:
            SchemaViolationError: naming the field and the rule; nothing was sent.
        """
        self.validator.check(envelope, "publish")
        self.inner.check_envelope(envelope)

    async def publish(self, envelope: Envelope[Any]) -> PublishAck:
        self.validator.check(envelope, "publish")
        return await self.inner.publish(envelope)

    async def send(self, envelope: Envelope[Any]) -> asyncio.Future[PublishAck]:
        self.validator.check(envelope, "publish")
        return await self.inner.send(envelope)

    async def flush(self, timeout: float | None = None) -> int:
        return await self.inner.flush(timeout)

    async def wait_acknowledged(self, timeout: float | None = None) -> None:
        await self.inner.wait_acknowledged(timeout)

    async def publish_raw(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> PublishAck:
        return await self.inner.publish_raw(topic, body, headers)

    async def subscribe(
        self,
        pattern: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        policy: DeliveryPolicy | None = None,
        payload_type: type | None = None,
        name: str | None = None,
    ) -> TransportSubscription:
        check = self.validator.check

        async def checked(message: Message) -> None:
            check(message.envelope, "transport")  # SchemaViolationError: dead-lettered at once
            await handler(message)

        return await self.inner.subscribe(
            pattern,
            checked,
            group=group,
            policy=policy,
            payload_type=payload_type,
            name=name or getattr(handler, "__qualname__", None),
        )

    async def subscribe_dead_letters(
        self,
        handler: Callable[[DeadLetterRecord], Awaitable[object]],
        *,
        pattern: str = ">",
        group: str | None = None,
        start: Literal["new", "all"] = "all",
    ) -> TransportSubscription:
        return await self.inner.subscribe_dead_letters(
            handler, pattern=pattern, group=group, start=start
        )
