"""What the bus's parts see of the bus: :class:`BusPort`, for the durable log
(:mod:`tidings._log`) and the remote side (:mod:`tidings._remote`), and
:class:`ObservationPort`, the one seam :mod:`tidings.observability` observes a bus through.

Neither part imports :class:`~tidings.Bus`: each is given a :class:`BusPort` (the bus makes
one, see ``bus.py``) and calls nothing else of its bus. The bus, in turn, calls them through
a few public methods each: the log's ``write_ahead``, ``append``, ``start(loop)``,
``follow``, ``unfollow``, ``settle(deadline)`` and ``aclose(deadline)``; the remote side's
``check_send``, ``check_publish``, ``send``, ``publish``, ``start``, ``subscribe``,
``unsubscribe``, ``subscriptions`` and ``aclose(timeout)`` (see ``docs/architecture.md``).
A test (``tests/test_architecture.py``) holds every module to the rule that it reaches no
other module's private names.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from tidings.dispatch import FailureReporter
    from tidings.event import Envelope
    from tidings.observability._observer import Observer
    from tidings.results import Delivery
    from tidings.routing import Route
    from tidings.store.base import EventStore
    from tidings.subscription import Subscription
    from tidings.transports.base import Transport

__all__ = ("BusPort", "ObservationPort")


class BusPort(Protocol):
    """The bus as its log and remote side use it."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the bus is bound to, if any (it may be closed)."""

    @property
    def loop_thread(self) -> int | None:
        """The id of the thread running :attr:`loop`."""

    @property
    def failures(self) -> FailureReporter:
        """The bus's one failure reporter (count, observe, log, ``on_error``, dead letter)."""

    @property
    def observer(self) -> Observer | None:
        """The bus's observer (:mod:`tidings.observability`), if observed."""

    @property
    def store(self) -> EventStore | None:
        """The bus's store, if it has one."""

    def after_write_ahead(self, route: Route, env: Envelope[Any]) -> None:
        """Send and dispatch ``env``, whose append a task made after ``publish`` returned."""

    def publish_failed(self, env: Envelope[Any], handler: str, exc: BaseException) -> None:
        """A transport did not publish ``env`` (refused, lost, or the bus closed first):
        count it (metrics) and dead-letter it, ``handler`` naming the step that failed."""


class ObservationPort(Protocol):
    """The seam :mod:`tidings.observability` observes a bus through (get it with
    ``tidings.bus.observation_port(bus)``); nothing else of the bus is reached.

    :meth:`attach` gives the bus an observer and the hooks that become its ``publish`` and
    ``emit`` (an observed bus's class is swapped for a subclass of :class:`~tidings.Bus`
    whose two methods are the hooks, called straight; an unobserved one pays nothing for
    the seam). The hooks call
    :attr:`publish_unhooked` / :attr:`emit_unhooked` (or :meth:`publish_each`) to publish.
    """

    @property
    def observer(self) -> Observer | None:
        """The observer attached, if any."""

    def attach(
        self,
        observer: Observer | None,
        publish: Callable[..., Envelope[Any]] | None,
        emit: Callable[..., Coroutine[Any, Any, Delivery[Any]]] | None,
    ) -> None:
        """Attach ``observer`` and the hooks ``bus.publish`` and ``bus.emit`` call from now
        on (``None``: the bus's own); ``attach(None, None, None)`` takes them all off. The
        routes are rebuilt, since subscriptions' fast paths may have changed."""

    @property
    def publish_unhooked(self) -> Callable[..., Envelope[Any]]:
        """:meth:`Bus.publish <tidings.Bus.publish>` itself, bound to the bus, without the
        hook (same arguments)."""

    @property
    def emit_unhooked(self) -> Callable[..., Coroutine[Any, Any, Delivery[Any]]]:
        """:meth:`Bus.emit <tidings.Bus.emit>` itself, bound to the bus, without the hook."""

    def publish_each(
        self, route: Route, event: Any, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[Any]:
        """Publish through ``route`` without its fast paths, so that every handler is called
        through :meth:`Subscription.call <tidings.Subscription.call>` (traced events)."""

    def route(self, event_type: type, topic: str | None) -> Route:
        """The route of ``event_type`` published on ``topic`` (its class's when ``None``)."""

    @property
    def dispatching(self) -> set[int]:
        """The ids of the threads dispatching right now (read, never changed): a publish
        from one of them is queued behind the current dispatch."""

    @property
    def transport_system(self) -> str | None:
        """The transport's messaging system name (``"nats"``...), if the bus has one."""

    @property
    def transport(self) -> Transport | None:
        """The bus's transport, if it has one (traces read its public description:
        ``destination``, ``server``, ``client_id``)."""

    @property
    def client_id(self) -> str:
        """The bus's own id as a messaging client: its ``source`` and its clock's node,
        ``"<source>/<node>"``."""

    def local_subscriptions(self) -> tuple[Subscription[Any], ...]:
        """The bus's in-process subscriptions (no lock taken; not the transport's)."""

    def all_subscriptions(self) -> tuple[Subscription[Any], ...]:
        """Every subscription: local, the transport's and the durable log's followers."""
