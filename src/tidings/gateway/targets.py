"""Sending a routed event to its targets: topics, webhooks, NATS subjects, MQTT and AMQP.

- ``{topic: NAME}`` and ``{nats: SUBJECT}``: ``bus.emit`` under that topic, so the event is
  appended to the bus's log (write-ahead) and, when the bus has a transport, published on
  it (a NATS subject is a tidings topic). Payload, key and headers are kept.
  :meth:`Sender.send_topics` publishes the topic targets of many dispatches at once on a
  bus with a log and no transport: appended together, in one transaction
  (``Bus.appending_together``), then dispatched; delivered once appended.
- ``{webhook: URL}``: one POST per attempt, CloudEvents HTTP binding in ``binary`` or
  ``structured`` mode, within ``timeout``. A 2xx answer delivers. A 4xx other than 408 and
  429 is dead-lettered at once (retrying cannot help). Anything else (connection refused,
  timeout, 408, 429, 5xx) is retried up to ``max_attempts`` attempts with exponential
  backoff (``backoff * 2**(attempt-1)``) and full jitter (a uniform draw in [0.5, 1.5) of
  that), then dead-lettered.
- ``{mqtt: TOPIC, url: ...}``, ``{amqp: EXCHANGE, url: ..., routing_key: ...}``: published
  through the gateway's :class:`~tidings.gateway.brokers.Brokers` and delivered when the
  broker acknowledged it (PUBACK, publisher confirm); failures are retried and
  dead-lettered as a webhook's (``status`` is ``null``).

A dead letter is an event on the route's ``dead_letter`` topic whose data holds the route,
the target, the attempts made, the last HTTP status (``null`` when none came) and the last
error, and the event as a structured CloudEvent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx

from tidings.cloudevents import to_cloudevent
from tidings.gateway.config import TargetConfig
from tidings.gateway.stats import TargetOutcome
from tidings.transports.http import encode_binary, encode_structured

if TYPE_CHECKING:
    from tidings.bus import Bus
    from tidings.gateway.brokers import Brokers
    from tidings.gateway.table import Dispatch

__all__ = ("Sender",)

logger = logging.getLogger("tidings.gateway")

_OUTCOMES_KEPT = 4096  # shared "delivered" outcomes kept (targets seen; cleared past it)


class Sender:
    """Sends dispatches to their targets on ``bus`` with ``client`` for webhooks.

    Attributes:
        outcomes: counts by ``(kind, result)``: result ``delivered``, ``retried`` or
            ``dead_lettered``.
    """

    def __init__(self, bus: Bus, client: httpx.AsyncClient, brokers: Brokers | None = None) -> None:
        self._bus = bus
        self._client = client
        self._brokers = brokers
        self.outcomes: Counter[tuple[str, str]] = Counter()
        # one "delivered" outcome per target, shared (immutable): no allocation per event
        self._delivered_outcomes: dict[tuple[str, str], TargetOutcome] = {}

    async def send(self, dispatch: Dispatch) -> list[TargetOutcome]:
        """Deliver ``dispatch`` to each of its targets, in order; what became of each.
        Never raises."""
        done: list[TargetOutcome] = []
        for target in dispatch.targets:
            try:
                if target.kind == "webhook":
                    done.append(await self._webhook(dispatch, target))
                elif target.kind in ("mqtt", "amqp") and self._brokers is not None:
                    done.append(await self._broker(dispatch, target, self._brokers))
                else:
                    env = dispatch.envelope
                    await self._bus.emit(
                        env.payload, topic=target.address, key=env.key, headers=env.headers or None
                    )
                    self.outcomes[(target.kind, "delivered")] += 1
                    done.append(TargetOutcome(target.kind, target.address, "delivered"))
            except Exception as exc:
                logger.exception(
                    "gateway route %r could not send to %s %s",
                    dispatch.route,
                    target.kind,
                    target.address,
                )
                self.outcomes[(target.kind, "failed")] += 1
                done.append(
                    TargetOutcome(
                        target.kind, target.address, "failed", f"{type(exc).__name__}: {exc}"
                    )
                )
        return done

    @property
    def batches_topics(self) -> bool:
        """Whether :meth:`send_topics` appends together (the bus has a log, no transport)."""
        return self._bus.appending_together() is not None

    async def send_topics(self, dispatches: Sequence[Dispatch]) -> list[list[TargetOutcome]]:
        """Publish every target of ``dispatches`` (all ``topic`` targets) appended together
        (one after another when :attr:`batches_topics` is false); what became of each target,
        per dispatch in order. Never raises."""
        batch = self._bus.appending_together()
        if batch is None:
            return [await self.send(dispatch) for dispatch in dispatches]
        done: list[list[TargetOutcome]] = [[] for _ in dispatches]
        joined: list[tuple[int, Dispatch, TargetConfig]] = []
        publish = self._bus.publish
        with batch:
            for index, dispatch in enumerate(dispatches):
                env = dispatch.envelope
                for target in dispatch.targets:
                    before = batch.size
                    try:
                        publish(
                            env.payload,
                            topic=target.address,
                            key=env.key,
                            headers=env.headers or None,  # none: the bus copies nothing
                        )
                    except Exception as exc:
                        done[index].append(self._failed(dispatch, target, exc))
                        continue
                    if batch.size > before:
                        joined.append((index, dispatch, target))
                    else:  # appended at once after all (another thread's loop): delivered
                        done[index].append(self._delivered(target))
        errors = await batch.wait()
        for (index, dispatch, target), error in zip(joined, errors, strict=True):
            if error is None:
                done[index].append(self._delivered(target))
            else:
                done[index].append(self._failed(dispatch, target, error))
        return done

    def _delivered(self, target: TargetConfig) -> TargetOutcome:
        key = (target.kind, target.address)
        self.outcomes[(target.kind, "delivered")] += 1
        outcome = self._delivered_outcomes.get(key)
        if outcome is None:
            if len(self._delivered_outcomes) >= _OUTCOMES_KEPT:
                self._delivered_outcomes.clear()
            outcome = self._delivered_outcomes[key] = TargetOutcome(*key, "delivered")
        return outcome

    def _failed(self, dispatch: Dispatch, target: TargetConfig, error: Exception) -> TargetOutcome:
        logger.error(
            "gateway route %r could not send to %s %s: %s",
            dispatch.route,
            target.kind,
            target.address,
            error,
        )
        self.outcomes[(target.kind, "failed")] += 1
        return TargetOutcome(
            target.kind, target.address, "failed", f"{type(error).__name__}: {error}"
        )

    async def _webhook(self, dispatch: Dispatch, target: TargetConfig) -> TargetOutcome:
        env = dispatch.envelope
        if target.mode == "structured":
            headers, body = encode_structured(env)
        else:
            headers, body = encode_binary(env)
        status: int | None = None
        error = ""
        for attempt in range(1, target.max_attempts + 1):
            try:
                answer = await self._client.post(
                    target.address, content=body, headers=headers, timeout=target.timeout
                )
                status = answer.status_code
                if 200 <= status < 300:
                    self.outcomes[("webhook", "delivered")] += 1
                    return TargetOutcome("webhook", target.address, "delivered")
                error = f"HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    break
            except httpx.TimeoutException:
                status, error = None, f"no answer within {target.timeout:g}s"
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if attempt < target.max_attempts:
                self.outcomes[("webhook", "retried")] += 1
                await asyncio.sleep(_backoff(target, attempt))
        await self.dead_letter(dispatch, target, attempt, status, error)
        return TargetOutcome("webhook", target.address, "dead_lettered", error)

    async def _broker(
        self, dispatch: Dispatch, target: TargetConfig, brokers: Brokers
    ) -> TargetOutcome:
        error = ""
        for attempt in range(1, target.max_attempts + 1):
            try:
                await brokers.send(target, dispatch.envelope)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                self.outcomes[(target.kind, "delivered")] += 1
                return TargetOutcome(target.kind, target.address, "delivered")
            if attempt < target.max_attempts:
                self.outcomes[(target.kind, "retried")] += 1
                await asyncio.sleep(_backoff(target, attempt))
        await self.dead_letter(dispatch, target, attempt, None, error)
        return TargetOutcome(target.kind, target.address, "dead_lettered", error)

    async def dead_letter(
        self,
        dispatch: Dispatch,
        target: TargetConfig,
        attempts: int,
        status: int | None,
        error: str,
    ) -> None:
        """Publish the dead letter of ``dispatch`` for ``target`` on its dead-letter topic."""
        self.outcomes[(target.kind, "dead_lettered")] += 1
        logger.warning(
            "gateway route %r dead-lettered event %s for %s after %d attempt(s): %s",
            dispatch.route,
            dispatch.envelope.id,
            target.address,
            attempts,
            error,
        )
        letter: dict[str, Any] = {
            "route": dispatch.route,
            "target": target.address,
            "attempts": attempts,
            "status": status,
            "error": error,
            "event": to_cloudevent(dispatch.envelope),
        }
        await self._bus.emit(letter, topic=dispatch.dead_letter)


def _backoff(target: TargetConfig, attempt: int) -> float:
    """The pause after failed ``attempt``: exponential, with full jitter in [0.5, 1.5)."""
    return float(target.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
