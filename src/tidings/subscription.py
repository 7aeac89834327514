"""Subscriptions: what a handler is subscribed to, and the handle that ends it.

Everything about how a handler is called is decided here, once, when it subscribes:
whether it is a coroutine function, whether it wants the :class:`~tidings.Envelope` or
the payload, whether it is held weakly, filtered or fired once. Publishing then calls a
ready-made callable and never inspects the handler again.

References: a bound method is held weakly (its object may be collected, which ends the
subscription); functions, lambdas and other callables are held strongly. ``owner=`` ties a
subscription to any weak-referenceable object: when the owner is collected the subscription
ends.
"""

from __future__ import annotations

import inspect
import itertools
import typing
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from tidings.event import Envelope, topic_of
from tidings.exceptions import InvalidHandlerError
from tidings.topics import compile_pattern, validate_pattern

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("Subscription",)

T = TypeVar("T")

SKIP: Final = object()
"""Returned by a subscription's invoker when it did not call its handler."""

_ids = itertools.count(1)


def handler_name(handler: object) -> str:
    """A handler's qualified name, ``module.qualname``, for errors, dead letters and metrics."""
    func = getattr(handler, "__func__", handler)
    module = getattr(func, "__module__", None) or type(func).__module__
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}"


def _wants_envelope(handler: Callable[..., Any]) -> bool:
    """Whether the handler's first parameter is annotated as an :class:`Envelope`."""
    func = getattr(handler, "__func__", handler)
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    if inspect.ismethod(handler) and params:
        params = params[1:]
    if not params:
        return False
    annotation = params[0].annotation
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(func).get(params[0].name, annotation)
        except Exception:
            return bool(annotation.split("[")[0].rsplit(".", 1)[-1] == "Envelope")
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, Envelope)


def _is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


class Subscription(Generic[T]):
    """A handler's subscription to a topic, a pattern or an event class.

    Returned by :meth:`Bus.subscribe <tidings.Bus.subscribe>`. ``cancel()`` is idempotent and
    thread-safe; ``with bus.subscribe(...):`` cancels on exit. Cancelling takes effect for
    every event published after ``cancel()`` returns.

    Attributes:
        id: a number unique within the process.
        pattern: the topic or pattern subscribed to (for an event class, its topic).
        event_type: the event class subscribed to, or ``None`` for a topic or pattern.
        name: the handler's qualified name.
        priority: higher runs first; ties run in subscription order.
        once: whether the subscription ends after its first delivery.
        is_async: whether the handler is a coroutine function.
        wants_envelope: whether the handler receives the envelope instead of the payload.
    """

    __slots__ = (
        "__weakref__",
        "_cancel",
        "_failed",
        "_matcher",
        "_once_token",
        "_owner_ref",
        "active",
        "event_type",
        "fast_handler",
        "id",
        "invoke",
        "is_async",
        "name",
        "once",
        "pattern",
        "priority",
        "wants_envelope",
    )

    def __init__(
        self,
        target: type[T] | str,
        handler: Callable[..., Any],
        *,
        priority: int,
        where: Callable[[Any], bool] | None,
        once: bool,
        weak: bool | None,
        owner: object | None,
        envelope: bool | None,
        cancel: Callable[[Subscription[Any]], None],
    ) -> None:
        if not callable(handler):
            raise InvalidHandlerError(
                f"handler must be callable, not {type(handler).__name__} {handler!r}"
            )
        if where is not None and not callable(where):
            raise InvalidHandlerError(
                f"where= must be a callable taking the event and returning a bool, "
                f"not {type(where).__name__}"
            )
        if isinstance(target, str):
            self.pattern = validate_pattern(target)
            self.event_type: type[T] | None = None
        elif isinstance(target, type):
            self.pattern = topic_of(target)
            self.event_type = target
        else:
            raise InvalidHandlerError(
                f"subscribe to an event class or a topic pattern string, not "
                f"{type(target).__name__} {target!r}"
            )
        self._matcher = compile_pattern(self.pattern)
        self.id = next(_ids)
        self.name = handler_name(handler)
        self.priority = priority
        self.once = once
        self.active = True
        self.is_async = _is_async(handler)
        self.wants_envelope = _wants_envelope(handler) if envelope is None else envelope
        self._cancel = cancel
        self._failed = itertools.count()
        self._once_token = [True] if once else None
        self._owner_ref = None
        if owner is not None:
            try:
                self._owner_ref = weakref.ref(owner, self._owner_gone)
            except TypeError:
                raise InvalidHandlerError(
                    f"owner= must support weak references; {type(owner).__name__} does not "
                    "(add '__weakref__' to its __slots__)"
                ) from None
        bound_self = getattr(handler, "__self__", None)
        hold_weakly = (
            inspect.ismethod(handler) and not isinstance(bound_self, type) if weak is None else weak
        )
        self.invoke = self._make_invoker(handler, where, hold_weakly)
        plain = not (self.is_async or self.wants_envelope or where or once or hold_weakly)
        self.fast_handler: Callable[[Any], object] | None = handler if plain else None

    def _make_invoker(
        self, handler: Callable[..., Any], where: Callable[[Any], bool] | None, weak: bool
    ) -> Callable[[Envelope[Any]], Any]:
        func: Callable[..., Any] = handler
        ref: weakref.ref[Any] | None = None
        if weak:
            if not inspect.ismethod(handler):
                raise InvalidHandlerError(
                    f"weak=True holds bound methods weakly; {self.name} is not a bound method"
                )
            func = handler.__func__
            try:
                ref = weakref.ref(handler.__self__, self._owner_gone)
            except TypeError:
                raise InvalidHandlerError(
                    f"cannot hold {self.name} weakly: {type(handler.__self__).__name__} objects "
                    "do not support weak references; pass weak=False to hold it strongly"
                ) from None
        envelope = self.wants_envelope
        once = self._once_token
        cancel = self.cancel

        def invoke(env: Envelope[Any]) -> Any:
            payload = env.payload
            if where is not None and not where(payload):
                return SKIP
            if once is not None:
                try:
                    once.pop()
                except IndexError:
                    return SKIP
                cancel()
            arg = env if envelope else payload
            if ref is None:
                return func(arg)
            obj = ref()
            return SKIP if obj is None else func(obj, arg)

        return invoke

    def matches(self, topic: str, event_type: type) -> bool:
        """Whether an event of ``event_type`` published on ``topic`` is delivered here."""
        if not self._matcher(topic):
            return False
        return self.event_type is None or issubclass(event_type, self.event_type)

    def _owner_gone(self, _ref: weakref.ref[Any]) -> None:
        self.cancel()

    def cancel(self) -> None:
        """End the subscription. Idempotent; safe from any thread and from inside handlers."""
        if self.active:
            self.active = False
            self._cancel(self)

    @property
    def failed(self) -> int:
        """How many times the handler raised."""
        return _count_value(self._failed)

    def record_failure(self) -> None:
        """Count one failure (thread-safe)."""
        next(self._failed)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    def __repr__(self) -> str:
        state = "active" if self.active else "cancelled"
        return f"<Subscription {self.id} {self.name} -> {self.pattern!r} {state}>"


def _count_value(counter: itertools.count[int]) -> int:
    """The next value an ``itertools.count`` started at 0 will return: how often it ran."""
    return int(repr(counter)[6:-1])
