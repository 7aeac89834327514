"""Record what a bus published, to assert on it in tests (``with bus.record() as rec:``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar, overload

from tidings.event import Envelope

__all__ = ("Recorder",)

T = TypeVar("T")


class Recorder:
    """The envelopes a bus published while recording, in publish order.

    Iterating yields envelopes; :attr:`events` the payloads; :meth:`of` the payloads of one
    class. The ``assert_*`` methods raise :class:`AssertionError` with a message listing what
    was published, so a failing test says what happened instead.
    """

    __slots__ = ("envelopes",)

    tidings_unobserved: ClassVar[bool] = True
    """A recorder sees every event as it is: observability leaves its subscription alone
    (see :attr:`Subscription.observable <tidings.Subscription.observable>`)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope[Any]] = []

    def append(self, envelope: Envelope[Any]) -> None:
        """Record one envelope (the bus calls this)."""
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[Any]:
        """Every recorded payload, in publish order."""
        return [e.payload for e in self.envelopes]

    @property
    def topics(self) -> list[str]:
        """Every recorded topic, in publish order."""
        return [e.topic for e in self.envelopes]

    def of(self, event_type: type[T]) -> list[T]:
        """The recorded payloads that are instances of ``event_type``."""
        return [e.payload for e in self.envelopes if isinstance(e.payload, event_type)]

    @overload
    def assert_published(
        self, target: type[T], *, where: Callable[[T], bool] | None = None, count: int | None = None
    ) -> list[T]: ...
    @overload
    def assert_published(
        self, target: str, *, where: Callable[[Any], bool] | None = None, count: int | None = None
    ) -> list[Any]: ...
    def assert_published(
        self,
        target: type[Any] | str,
        *,
        where: Callable[[Any], bool] | None = None,
        count: int | None = None,
    ) -> list[Any]:
        """Assert that matching events were published (``count`` times exactly, if given).

        ``target`` is an event class or an exact topic. Returns the matching payloads.
        """
        if isinstance(target, str):
            found = [e.payload for e in self.envelopes if e.topic == target]
        else:
            found = self.of(target)
        if where is not None:
            found = [p for p in found if where(p)]
        name = target if isinstance(target, str) else target.__name__
        if count is None and not found:
            raise AssertionError(f"no {name} event was published{self._summary()}")
        if count is not None and len(found) != count:
            raise AssertionError(
                f"expected {count} {name} event(s), found {len(found)}{self._summary()}"
            )
        return found

    def assert_nothing_published(self) -> None:
        """Assert that nothing was published."""
        if self.envelopes:
            raise AssertionError(f"expected no events{self._summary()}")

    def _summary(self) -> str:
        if not self.envelopes:
            return "; nothing was published"
        shown = "\n  ".join(f"{e.topic}: {e.payload!r}" for e in self.envelopes[:20])
        more = f"\n  ... and {len(self.envelopes) - 20} more" if len(self.envelopes) > 20 else ""
        return f"; published ({len(self.envelopes)}):\n  {shown}{more}"

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.envelopes.clear()

    def __iter__(self) -> Iterator[Envelope[Any]]:
        return iter(self.envelopes)

    def __len__(self) -> int:
        return len(self.envelopes)
