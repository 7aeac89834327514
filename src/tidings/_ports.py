"""What the bus's parts see of the bus: :class:`BusPort`, for the durable log
(:mod:`tidings._log`) and the remote side (:mod:`tidings._remote`).

Neither part imports :class:`~tidings.Bus`: each is given a :class:`BusPort` (the bus makes
one, see ``bus.py``) and calls nothing else of its bus. The bus, in turn, calls them through
a few methods each: the log's ``write_ahead``, ``append``, ``start(loop)``, ``follow``,
``unfollow`` and ``aclose``; the remote side's ``check_send``, ``send``, ``publish``,
``start``, ``subscribe``, ``unsubscribe`` and ``aclose(deadline)`` (see
``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tidings.dispatch import FailureReporter
    from tidings.event import Envelope
    from tidings.observability._observer import Observer
    from tidings.routing import Route
    from tidings.store.base import EventStore

__all__ = ("BusPort",)


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
