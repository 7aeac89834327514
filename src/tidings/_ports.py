"""What the bus's parts see of the bus: :class:`BusPort`, for the durable log
(:mod:`tidings._log`) and the remote side (:mod:`tidings._remote`), and
:class:`ObservationPort`, the one seam :mod:`tidings.observability` observes a bus through.

Neither part imports :class:`~tidings.Bus`: each is given a :class:`BusPort` (the bus makes
one, see ``bus.py``) and calls nothing else of its bus. The bus, in turn, carries what is
published through one :class:`Carrier` (the log, the remote side, or both in
:mod:`tidings._carrier`) and reaches the parts directly only for what is not carrying: the
log's ``follow``, ``unfollow``, ``store`` and ``followers``; the remote side's
``subscribe``, ``unsubscribe``, ``subscriptions`` and ``transport`` (see
``docs/architecture.md``).
A test (``tests/test_architecture.py``) holds every module to the rule that it reaches no
other module's private names.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from tidings._fastpath import ObservedPublisher, Publisher
    from tidings._log import AppendBatch
    from tidings._reentry import ThreadDispatch
    from tidings.dispatch import FailureReporter
    from tidings.event import Envelope
    from tidings.observability._observer import Observer
    from tidings.results import Delivery
    from tidings.routing import Route
    from tidings.store.base import EventStore
    from tidings.subscription import Subscription
    from tidings.transports.base import Transport

__all__ = ("BusPort", "Carrier", "EventCheck", "ObservationPort")


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


class Carrier(Protocol):
    """What carries a bus's published events beyond its own handlers: the durable log
    (:class:`tidings._log.Log`), the remote side (:class:`tidings._remote.Remote`), or both
    (:class:`tidings._carrier.StoredAndSent`: appended first, then sent). A bus holds at
    most one and calls it through these methods only, in this order over its life:
    :meth:`start` (sync, when bound to a loop) and :meth:`connect`; :meth:`write_ahead`
    (and :meth:`send`) for each ``publish``, :meth:`carry` for each ``emit``,
    :meth:`flush` before reads (then :meth:`acknowledged` for ``Bus.flush``); on
    ``aclose``, :meth:`disconnect`, :meth:`settle`, then :meth:`aclose`; on ``close``,
    :meth:`close_sync`.

    A refusal known before the event is handed over (the transport's size limit) raises
    before the append, so a refused event is neither logged nor sent."""

    def write_ahead(self, route: Route, env: Envelope[Any]) -> bool:
        """Carry a published ``env`` before it is dispatched: append it, then send it.
        Whether the bus dispatches it now: ``False`` when the append was deferred to a
        task, which calls :meth:`BusPort.after_write_ahead` once it is in the store."""

    def send(self, env: Envelope[Any]) -> None:
        """Send ``env``, whose append a deferred task made (nothing without a transport)."""

    async def carry(self, env: Envelope[Any]) -> None:
        """Carry an emitted ``env``: append it (awaited), then publish it and wait for the
        server's acknowledgement."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The bus is now bound to ``loop``: start what runs on it (log followers)."""

    async def connect(self) -> None:
        """Connect to the server and open the subscriptions made so far (with a
        transport; idempotent)."""

    async def flush(self) -> None:
        """Wait until every event published so far is in the store (with one)."""

    async def acknowledged(self) -> None:
        """Wait until the server acknowledged every event published so far (with a
        transport; after :meth:`flush`); raise the typed error of one that failed since
        the last call that returned."""

    def together(self) -> AppendBatch | None:
        """A batch in which publishes are appended together (a log without a transport:
        see :mod:`tidings._log`), or None: this carrier publishes one by one."""

    async def disconnect(self, timeout: float) -> None:
        """Before the bus refuses events: stop taking them from the server, finish the
        handlers in flight, send what was published, wait for acks, then disconnect
        (with a transport; idempotent, also after ``close``)."""

    async def settle(self, deadline: float) -> None:
        """After the bus refuses events: finish deferred appends by loop time ``deadline``."""

    async def aclose(self, deadline: float) -> list[str]:
        """Stop log followers (letting them finish by ``deadline``), close the store; what
        did not finish, for the bus's :class:`~tidings.CloseReport`."""

    def close_sync(self) -> None:
        """From synchronous code: close the store if nothing still uses it."""


class EventCheck(Protocol):
    """What ``Bus(validator=...)`` checks each published or emitted event with, before its
    carrier appends or sends it and before any handler runs (in every mode: memory, store,
    transport). :class:`tidings.contracts.Validator` is one."""

    def check(self, envelope: Envelope[Any], boundary: str = "publish") -> None:
        """Return if ``envelope`` may be published; else raise (nothing is appended, sent
        or dispatched), counting the refusal under ``boundary``."""


class ObservationPort(Protocol):
    """The seam :mod:`tidings.observability` observes a bus through (get it with
    ``tidings.bus.observation_port(bus)``); nothing else of the bus is reached.

    :meth:`attach` gives the bus an observer, the publisher its ``publish`` calls (an
    :class:`~tidings._speedups.ObservedPublisher` wrapping :attr:`publisher`, which carries
    the observer's per-publish tests and hands it, through its hook, what it must trace or
    time) and the hook that becomes its ``emit`` (an observed bus's class is swapped for a
    subclass of :class:`~tidings.Bus` whose ``emit`` is the hook, called straight). An
    unobserved bus pays nothing for the seam. The hooks publish with :attr:`publisher`,
    :meth:`publish_routed` or :meth:`publish_each`, and emit with :attr:`emit_unhooked`.
    """

    @property
    def observer(self) -> Observer | None:
        """The observer attached, if any."""

    def attach(
        self,
        observer: Observer | None,
        publisher: ObservedPublisher | None,
        emit: Callable[..., Coroutine[Any, Any, Delivery[Any]]] | None,
    ) -> None:
        """Attach ``observer``, the publisher ``bus.publish`` calls from now on and the hook
        ``bus.emit`` is (``None``: the bus's own); ``attach(None, None, None)`` takes them
        all off. The routes are rebuilt, since subscriptions' fast paths may have changed."""

    @property
    def publisher(self) -> Publisher:
        """The bus's own hot path (:class:`~tidings._speedups.Publisher`), unobserved: what an
        :class:`~tidings._speedups.ObservedPublisher` wraps, and what its hook publishes a
        timed publish to plain sync handlers with (same arguments)."""

    @property
    def emit_unhooked(self) -> Callable[..., Coroutine[Any, Any, Delivery[Any]]]:
        """:meth:`Bus.emit <tidings.Bus.emit>` itself, bound to the bus, without the hook."""

    def publish_each(
        self, route: Route, event: Any, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[Any]:
        """Publish through ``route`` without its fast paths, so that every handler is called
        through :meth:`Subscription.call <tidings.Subscription.call>` (traced events)."""

    def publish_routed(
        self, route: Route, event: Any, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[Any]:
        """Publish through ``route`` as :meth:`Bus.publish <tidings.Bus.publish>` does once it
        has looked ``route`` up, without the observed publisher (so without its hook):
        what that hook does with a publish the bus does not dispatch on its hot path."""

    def route(self, event_type: type, topic: str | None) -> Route:
        """The route of ``event_type`` published on ``topic`` (its class's when ``None``)."""

    @property
    def dispatching(self) -> ThreadDispatch:
        """Each thread's dispatch state (read, never changed): a publish from a thread whose
        ``dispatching.state.busy`` is true is queued behind the current dispatch."""

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
