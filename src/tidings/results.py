"""What one delivery reports: per-handler outcomes of :meth:`Bus.emit <tidings.Bus.emit>`,
and what :meth:`Bus.aclose <tidings.Bus.aclose>` could not finish.

A :class:`Delivery` from emit's fast path (every handler a plain coroutine function) is
built lazily (:func:`lazy_delivery`): it keeps the subscriptions and one list of their
results, a :class:`Failed` marking a handler that raised, and makes the
:class:`HandlerOutcome` records (and reads the handlers' names) only when ``outcomes`` is
first read. Its public API is the same as an eager one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tidings.event import Envelope

if TYPE_CHECKING:
    from tidings.subscription import Subscription

__all__ = ("CloseReport", "Delivery", "Failed", "HandlerOutcome", "lazy_delivery")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """What one handler did with one event.

    Attributes:
        handler: the handler's qualified name.
        result: what it returned (``None`` when it failed).
        error: the exception it raised, or ``None``.
        queued: the event went into the handler's buffer (queued mode); its worker handles
            it later, so there is no result yet.
    """

    handler: str
    result: Any = None
    error: BaseException | None = None
    queued: bool = False

    @property
    def ok(self) -> bool:
        """Whether the handler returned without raising."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """The outcome of :meth:`Bus.emit <tidings.Bus.emit>`: one entry per handler that ran.

    Handlers skipped by their ``where=`` filter, spent ``once`` handlers and handlers whose
    object is gone do not appear.
    """

    envelope: Envelope[T]
    outcomes: tuple[HandlerOutcome, ...] = field(default=())

    @property
    def results(self) -> list[Any]:
        """The return values of the handlers that succeeded, in the order they were started."""
        return [o.result for o in self.outcomes if o.error is None]

    @property
    def errors(self) -> list[BaseException]:
        """The exceptions of the handlers that failed, in the order they were started."""
        return [o.error for o in self.outcomes if o.error is not None]

    @property
    def ok(self) -> bool:
        """Whether every handler succeeded."""
        return all(o.error is None for o in self.outcomes)

    def raise_errors(self) -> None:
        """Raise an :class:`ExceptionGroup` of every handler error, if there was any.

        Raises:
            ExceptionGroup: naming the event and holding each handler's exception; an
                exception that is not an :class:`Exception` (such as ``CancelledError``)
                makes it a :class:`BaseExceptionGroup`.
        """
        errors = self.errors
        if errors:
            names = ", ".join(o.handler for o in self.outcomes if o.error is not None)
            raise BaseExceptionGroup(
                f"{len(errors)} handler(s) failed for event {self.envelope.id} on "
                f"{self.envelope.topic!r}: {names}",
                errors,
            )


class Failed:
    """In a lazy delivery's results: the handler at this place raised ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


# The slot's descriptor: a lazy delivery caches its outcomes there.
_OUTCOMES: Any = Delivery.__dict__["outcomes"]


class _LazyDelivery(Delivery[T]):
    """A :class:`Delivery` whose outcomes are made on first read (see the module docstring).

    ``_lazy`` holds the subscriptions and their results; the outcomes, once made, are kept
    in :class:`Delivery`'s own ``outcomes`` slot (this class's ``outcomes`` property hides
    it from plain attribute access)."""

    __slots__ = ("_lazy",)

    _lazy: tuple[Sequence[Subscription[Any]], list[Any]]

    @property
    def outcomes(self) -> tuple[HandlerOutcome, ...]:
        try:
            built: tuple[HandlerOutcome, ...] = _OUTCOMES.__get__(self)
        except AttributeError:
            subs, results = self._lazy
            built = tuple(
                HandlerOutcome(sub.name, error=r.error)
                if type(r) is Failed
                else HandlerOutcome(sub.name, r)
                for sub, r in zip(subs, results, strict=True)
            )
            _OUTCOMES.__set__(self, built)
        return built

    @property
    def results(self) -> list[Any]:
        return [r for r in self._lazy[1] if type(r) is not Failed]

    @property
    def ok(self) -> bool:
        return not any(type(r) is Failed for r in self._lazy[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delivery):
            return NotImplemented
        return (self.envelope, self.outcomes) == (other.envelope, other.outcomes)

    __hash__ = Delivery.__hash__

    def __repr__(self) -> str:
        return f"Delivery(envelope={self.envelope!r}, outcomes={self.outcomes!r})"


def lazy_delivery(
    envelope: Envelope[T], subs: Sequence[Subscription[Any]], results: list[Any]
) -> Delivery[T]:
    """A :class:`Delivery` of ``envelope`` to ``subs`` (in order) with these results, each a
    handler's return value or a :class:`Failed`. Takes ``results`` over: do not change it."""
    delivery: _LazyDelivery[T] = _new(_LazyDelivery)
    _set(delivery, "envelope", envelope)
    _set(delivery, "_lazy", (subs, results))
    return delivery


_new = object.__new__
_set = object.__setattr__


@dataclass(frozen=True, slots=True)
class CloseReport:
    """What :meth:`Bus.aclose <tidings.Bus.aclose>` could not finish within its timeout.

    Attributes:
        unfinished: one line per handler call that was still running (and was cancelled) or
            event still waiting in a queued subscription's buffer.
    """

    unfinished: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Whether everything in flight finished."""
        return not self.unfinished
