"""The one call-and-count step and the one failure reporter every delivery path uses.

Every path that delivers an event to a handler (the bus's inline dispatch and ``emit``,
queued workers and batches in :mod:`tidings.delivery`, log followers in :mod:`tidings._log`,
a transport's deliveries in :mod:`tidings._remote`) does the same three things:

1. **call** the subscription (:meth:`Subscription.call <tidings.Subscription>`, which goes
   through its middleware and observer, if any);
2. **liveness**: a call that returns :data:`~tidings.subscription.SKIP` found the handler's
   object collected: nobody saw the event(s), so nothing is counted;
3. **outcome**: otherwise count the event(s) delivered, or, if the call raised, hand the
   failure to the bus's :class:`FailureReporter`.

:func:`call_counted` (sync) and :func:`acall_counted` (awaiting a coroutine handler) are
steps 1-3 for one call; the caller catches the handler's exception and reports it. The bus's
inlined fast paths (plain handlers, see :mod:`tidings.routing`) call handlers straight for
speed, and report their failures through :meth:`FailureReporter.report_plain`.

:class:`FailureReporter` is the only place a handler failure is counted, told to the
observer, logged, passed to ``on_error`` and dead-lettered. Guarantees:

- a failure is counted on its subscription exactly once (a call already counted as
  delivered, on a fast path, is taken back: ``counted=True``);
- a dead letter's own handler failing is logged and never dead-lettered again;
- a final failure nobody hears of (no dead-letter subscription, no ``on_error``, no
  transport storing dead letters) is logged at ERROR, else at DEBUG;
- ``on_error``'s own exceptions are logged, never raised;
- a dead letter refused by a full queue is logged, never raised to the failing path;
- the events an interrupted dispatch leaves queued (:meth:`FailureReporter.interrupted`)
  are counted as dropped on their subscriptions and logged at ERROR, never dispatched.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tidings.dead_letter import DEAD_LETTER_TOPIC, DeadLetter
from tidings.event import Envelope
from tidings.exceptions import QueueFullError, WouldBlock
from tidings.middleware.base import DROPPED, Handler, attempts_of
from tidings.observability.logs import log_fields
from tidings.subscription import SKIP, Subscription

if TYPE_CHECKING:
    from tidings.observability._observer import Observer
    from tidings.routing import Route

__all__ = (
    "ChainedCall",
    "ErrorHook",
    "FailureReporter",
    "acall_counted",
    "call_chained",
    "call_counted",
)

logger = logging.getLogger("tidings")

_SHOWN = 10
"""How many dropped events :meth:`FailureReporter.interrupted` names in its log line."""

ErrorHook = Callable[[Envelope[Any], Subscription[Any], BaseException], None]
"""``on_error(envelope, subscription, exception)``: called for every handler failure."""


def call_counted(sub: Subscription[Any], arg: Any, n: int = 1) -> Any:
    """Call ``sub`` with ``arg`` (its argument for one envelope, or a batch's list of
    ``n``) and count ``n`` delivered unless its handler's object was collected; the
    handler's result, or :data:`~tidings.subscription.SKIP`. The handler's exception is
    raised to the caller, which reports it."""
    result = sub.call(arg)
    if result is not SKIP:
        sub.record_delivered(n)
    return result


ChainedCall = tuple[Subscription[Any], Handler, "itertools.count[int]"]
"""One subscription of a route called straight through its middleware chain: the
subscription, its :attr:`~tidings.Subscription.chained` chain and its own delivery counter."""


def call_chained(
    calls: tuple[ChainedCall, ...],
    env: Envelope[Any],
    report: Callable[[Subscription[Any], Envelope[Any], BaseException], None],
) -> None:
    """Steps 1-3 for each of a route's subscriptions whose middleware chain it calls
    straight (an inline route whose every subscription has
    :attr:`~tidings.Subscription.chained` set): call the chain with the envelope; a
    :data:`~tidings.middleware.DROPPED` result counts one dropped call, any other one
    delivery; an exception goes to ``report`` (the bus's :meth:`FailureReporter.report`),
    counted once as a failure. Exactly what :func:`call_counted` does for each through
    :meth:`Subscription.call <tidings.Subscription.call>`, without its per-call lookups."""
    for sub, chain, delivered in calls:
        try:
            result = chain(env)
        except Exception as exc:
            report(sub, env, exc)
            continue
        if result is DROPPED:
            sub.record_dropped()
        else:
            next(delivered)


async def acall_counted(sub: Subscription[Any], arg: Any, n: int = 1) -> Any:
    """As :func:`call_counted`, awaiting the result when it is awaitable (a coroutine
    handler): counted once it has finished without raising."""
    result = sub.call(arg)
    if result is SKIP:
        return SKIP
    if inspect.isawaitable(result):
        result = await result
        if result is SKIP:  # dropped by a middleware: counted as such by the subscription
            return SKIP
    sub.record_delivered(n)
    return result


class FailureReporter:
    """Counts, reports and dead-letters one bus's handler failures (see the module docstring).

    Args:
        on_error: the bus's ``on_error`` hook, if any.
        observer: returns the bus's observer (:mod:`tidings.observability`), if any.
        dead_letter_route: returns the route of :class:`~tidings.DeadLetter` events.
        publish_dead_letter: dispatches a dead letter through that route, carrying the
            failed event's headers (so it stays in the event's trace).
        stored_remotely: the bus has a transport, whose server stores its dead letters.
    """

    __slots__ = ("_dead_letter_route", "_observer", "_on_error", "_publish", "_stored_remotely")

    def __init__(
        self,
        *,
        on_error: ErrorHook | None,
        observer: Callable[[], Observer | None],
        dead_letter_route: Callable[[], Route],
        publish_dead_letter: Callable[[Route, DeadLetter, Mapping[str, str] | None], None],
        stored_remotely: bool,
    ) -> None:
        self._on_error = on_error
        self._observer = observer
        self._dead_letter_route = dead_letter_route
        self._publish = publish_dead_letter
        self._stored_remotely = stored_remotely

    def report_plain(
        self, route: Route, handler: object, env: Envelope[Any], exc: BaseException
    ) -> None:
        """Report a failure of a plain handler a fast path called straight (and counted as
        delivered with the route's dispatch count)."""
        sub = next(s for s in route.subs if s.handler is handler)
        self.report(sub, env, exc, counted=True)

    def report(
        self,
        sub: Subscription[Any],
        env: Envelope[Any],
        exc: BaseException,
        *,
        counted: bool = False,
        attempts: int = 1,
        final: bool = True,
    ) -> None:
        """Count, report and dead-letter one handler failure.

        ``counted``: the call was already counted as delivered, so take it back.
        ``attempts``: deliveries made so far; ``final``: no retry follows (a transport
        retries the others), so dead-letter it.
        """
        attempts = attempts_of(exc, attempts)  # a Retry middleware's attempts, if it gave up
        if counted:
            sub.record_routed_failure()
        else:
            sub.record_failure()
        observer = self._observer()
        if observer is not None:
            observer.failed(sub, env, exc, final and env.topic != DEAD_LETTER_TOPIC)
        if env.topic == DEAD_LETTER_TOPIC:
            logger.error(
                "dead-letter handler %s failed on event %s; not dead-lettered again",
                sub.name,
                env.id,
                exc_info=exc,
                extra=log_fields(env, sub),
            )
            return
        route = self._dead_letter_route()
        on_error = self._on_error
        if final and not route.subs and on_error is None and not self._stored_remotely:
            # Nobody would ever hear of it (a transport stores its dead letters on the
            # server): say it where operators look.
            logger.error(
                "handler %s failed on event %s (%s); subscribe to tidings.DeadLetter or pass "
                "on_error= to handle failures",
                sub.name,
                env.id,
                env.topic,
                exc_info=exc,
                extra=log_fields(env, sub),
            )
        else:
            logger.debug(
                "handler %s failed on event %s (%s)",
                sub.name,
                env.id,
                env.topic,
                extra=log_fields(env, sub),
            )
        if on_error is not None:
            try:
                on_error(env, sub, exc)
            except Exception:
                logger.exception(
                    "on_error hook failed for event %s", env.id, extra=log_fields(env, sub)
                )
        if final:
            self.dead_letter(DeadLetter(env, sub.name, exc, attempts), sub, route)

    def interrupted(
        self,
        entries: list[tuple[Route, Envelope[Any]]],
        exc: BaseException,
        during: Envelope[Any] | None = None,
    ) -> None:
        """Count and log the events an interrupted dispatch leaves undelivered: those its
        handlers published (queued behind it) when an exception that is not a handler
        failure, such as ``KeyboardInterrupt``, ended it. Each subscription of each event's
        route that is still active counts it as dropped (not one cancelled meanwhile, such
        as a ``once`` one that took its event: it would not have had it); one ERROR line
        names the interrupt and the events, and ``during``, the event its handlers
        published that was being dispatched when the interrupt came (some of its handlers
        may not have had it; its publisher, a handler, has returned and cannot tell). No
        handler runs (the interrupt goes on at once), so nothing is dead-lettered."""
        for route, _ in entries:
            for sub in route.subs:
                if sub.active:
                    sub.record_dropped()
        shown = ", ".join(f"{env.id} ({env.topic})" for _, env in entries[:_SHOWN])
        more = f" and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else ""
        current = (
            ""
            if during is None
            else f"; {during.id} ({during.topic}), which its handlers published, was being "
            "dispatched: not every handler of it may have had it"
        )
        logger.error(
            "a dispatch was interrupted by %s: %d event(s) its handlers published were "
            "dropped, not dispatched%s%s%s",
            type(exc).__name__,
            len(entries),
            f": {shown}" if entries else "",
            more,
            current,
        )

    def dead_letter(
        self,
        letter: DeadLetter,
        sub: Subscription[Any] | None = None,
        route: Route | None = None,
    ) -> None:
        """Publish ``letter`` in the process, carrying its event's headers (so it stays in
        the event's trace); a handler failure's last step, and how a publish the transport
        refused is reported. Nothing happens without a dead-letter subscription; a refusal
        by its full queue is logged, never raised."""
        if route is None:
            route = self._dead_letter_route()
        if not route.subs:  # in-flight work may still dead-letter while the bus closes
            return
        env = letter.envelope
        try:
            self._publish(route, letter, env.headers or None)
        except (QueueFullError, WouldBlock):
            logger.exception(
                "dead letter for event %s was refused by a full queue",
                env.id,
                extra=log_fields(env, sub),
            )
