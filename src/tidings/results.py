"""What one delivery reports: per-handler outcomes of :meth:`Bus.emit <tidings.Bus.emit>`,
and what :meth:`Bus.aclose <tidings.Bus.aclose>` could not finish."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tidings.event import Envelope

__all__ = ("CloseReport", "Delivery", "HandlerOutcome")

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
