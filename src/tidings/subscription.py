"""Subscriptions: what a handler is subscribed to, how it is delivered, and its handle.

Everything about how a handler is called is decided here, once, when it subscribes:
whether it is a coroutine function, whether it wants the :class:`~tidings.Envelope` or
the payload, whether it is held weakly, filtered or fired once, and its delivery mode.
Publishing then reads a few precomputed attributes and never inspects the handler again.
A handler that cannot be called with one argument is refused here, with
:class:`~tidings.exceptions.InvalidHandlerError`. What a plain function or bound method
looks like is read from its code object once and cached (bounded), so subscribing the same
function many times costs no introspection; other callables go through :mod:`inspect`,
and one whose signature cannot be read (some builtins) is accepted.

Counters: a subscription counts its own calls, plus the dispatches of the routes it is in
that count for all their subscriptions at once (:class:`RouteCounters`).

Delivery modes:

- ``"inline"`` (default for sync handlers): called in the publisher's thread, during
  ``publish``.
- ``"task"`` (default for coroutine functions): started eagerly on the bus's loop; one that
  suspends finishes as a task.
- ``"queued"``: the event goes into a bounded buffer and worker(s) call the handler: threads
  for sync handlers, tasks for coroutine functions. Chosen by ``mode="queued"``, or implied by
  ``workers``, ``batch`` or ``pool``.

References: a bound method is held weakly (its object may be collected, which ends the
subscription); functions, lambdas and other callables are held strongly. ``owner=`` ties a
subscription to any weak-referenceable object: when the owner is collected the subscription
ends.

Middleware (see :mod:`tidings.middleware`) is composed here too, once: a subscription given
middleware calls the composed handler with the envelope, and is never "plain" (the bus's
inlined fast paths skip it). A subscription without middleware is exactly as it would be
without the feature: same class, same calls. Middleware does not apply to batch handlers.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import math
import threading
import typing
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar

from tidings.event import Envelope, topic_of
from tidings.exceptions import InvalidHandlerError
from tidings.middleware.base import DROPPED, Handler, Middleware, compose
from tidings.topics import compile_pattern, validate_pattern

if TYPE_CHECKING:
    from types import TracebackType

    from tidings.delivery import Queued

__all__ = (
    "Mode",
    "Observer",
    "Subscription",
    "SubscriptionOwner",
    "SubscriptionStatistics",
    "check_arity",
)

T = TypeVar("T")

Mode = Literal["inline", "task", "queued"]
"""How a subscription's handler is called; see the module docstring."""

INLINE: Final = 0
TASK: Final = 1
QUEUED: Final = 2
_MODES: Final = ("inline", "task", "queued")  # indexed by the constants above

SKIP: Final = object()
"""Returned by :meth:`Subscription.call` when the handler's object is gone."""

_ids = itertools.count(1)
_counts_lock = threading.Lock()


class Observer(Protocol):
    """What :meth:`Subscription.observe` routes calls through (see
    :mod:`tidings.observability`)."""

    def call(self, sub: Subscription[Any], arg: Any) -> Any:
        """Call ``sub``'s handler for ``arg``, an envelope or a list of envelopes (batch)."""

    def inlines(self, sub: Subscription[Any]) -> bool:
        """Whether the bus may still call the plain handler straight, bypassing :meth:`call`."""


class SubscriptionOwner(Protocol):
    """What a subscription knows of its bus (the bus gives each subscription one; a
    subscription made without a bus, as in routing tests, has ``None`` and tells no one)."""

    @property
    def observer(self) -> Observer | None:
        """The bus's observer, if it is observed (see :meth:`Subscription.observe`)."""

    def unsubscribe(self, sub: Subscription[Any], *, close: bool = True) -> None:
        """Remove ``sub`` from the bus's routes; ``close``: close its buffer too (queued)."""

    def release(self, sub: Subscription[Any]) -> None:
        """End ``sub`` from a weakref callback (its owner was collected), taking no lock."""


def handler_name(handler: object) -> str:
    """A handler's qualified name, ``module.qualname``, for errors, dead letters and metrics."""
    func = getattr(handler, "__func__", handler)
    module = getattr(func, "__module__", None) or type(func).__module__
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}"


def _first_parameter(handler: Callable[..., Any]) -> tuple[Any, str] | None:
    """The function behind ``handler`` and the name of the parameter that receives events."""
    func = getattr(handler, "__func__", handler)
    skip = 1 if inspect.ismethod(handler) else 0
    code = getattr(func, "__code__", None)
    if code is not None:  # a plain function: read its code object, no Signature needed
        names = code.co_varnames[skip : code.co_argcount]
        return (func, names[0]) if names else None
    try:
        params = list(inspect.signature(func).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    return (func, params[0].name) if params else None


def _wants_envelope(handler: Callable[..., Any]) -> bool:
    """Whether the handler's first parameter is annotated as an :class:`Envelope` (or a list
    of them, for batch handlers)."""
    found = _first_parameter(handler)
    if found is None:
        return False
    func, name = found
    annotation = getattr(func, "__annotations__", {}).get(name)
    if isinstance(annotation, str):
        if "Envelope" not in annotation:
            return False  # no need to resolve the string annotation
        try:
            annotation = typing.get_type_hints(func).get(name, annotation)
        except Exception:
            return "Envelope" in annotation.replace("list[", "").split("[")[0]
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation) or (None,)
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, Envelope)


def _is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


_CALL_RULE = (
    "a handler is called with one argument: the event, its Envelope, or (batch=) the list "
    "of them, as in def handler(event: MyEvent) -> None"
)
TRANSACTIONAL_CALL: Final = (
    "a transactional handler is called with two arguments: the event and the Transaction, "
    "as in def handler(event: MyEvent, tx: Transaction) -> None"
)
_CACHE_LIMIT = 4096
"""The most handler functions whose introspection is kept (cleared when full)."""

# Introspection of plain functions and bound methods, by parameters skipped (0 or 1), then
# by the id of the code object: the code object (held, so its id is not reused while it is
# cached), the annotation of its first parameter, and (is a coroutine function, wants the
# envelope, why it cannot take one argument, or None). A code object fixes the parameter
# names, their number and the coroutine flag; the annotation is read per function object
# and compared, because closures of one code object may be annotated differently. (Keyed
# by id: a code object's own hash digests its bytecode, too slow for every subscribe.)
_Shape = tuple[bool, bool, str | None]
_shapes: tuple[dict[int, tuple[Any, tuple[str | None, Any], _Shape]], ...] = ({}, {})


_last_shape: tuple[Any, Any, str | None, Any, _Shape] = (
    None,
    None,
    None,
    None,
    (False, False, None),
)
"""The last plain function :func:`_shape` read: the function, its code, its first
parameter's name and annotation, and its shape (replaced as one tuple, so a reader never
sees parts of two)."""


def _arity_problem(code: Any, skip: int, func: Any, count: int) -> str | None:
    """Why a function with ``code`` (``skip`` leading parameters bound) cannot be called with
    ``count`` positional arguments, or ``None``."""
    positional = code.co_argcount - skip
    defaults = len(func.__defaults__ or ())
    required = max(0, positional - defaults)
    kw_required = code.co_kwonlyargcount - len(func.__kwdefaults__ or ())
    takes_more = code.co_flags & inspect.CO_VARARGS
    if required > count:
        return f"requires {required} positional arguments"
    if positional < count and not takes_more:
        return "takes no arguments" if positional <= 0 else f"takes only {positional}"
    if kw_required > 0:
        return f"requires {kw_required} keyword-only argument(s) without a default"
    return None


def _signature_problem(handler: Callable[..., Any], count: int) -> str | None:
    """Like :func:`_arity_problem` for any callable, through :func:`inspect.signature`;
    ``None`` also when the signature cannot be read (builtins, some C callables). A
    decorated function is judged by its wrapper's own signature, not the wrapped one's: a
    decorator may supply arguments (as a transactional handler's wrapper does)."""
    try:
        signature = inspect.signature(handler, follow_wrapped=False)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*range(count))
    except TypeError as exc:
        return f"cannot be called so ({exc})"
    return None


def check_arity(handler: Callable[..., Any], count: int, expected: str) -> None:
    """Refuse ``handler`` unless it can be called with ``count`` positional arguments.

    Raises:
        InvalidHandlerError: naming the handler, what is wrong, and ``expected``.
    """
    func = getattr(handler, "__func__", handler)
    code = getattr(func, "__code__", None)
    if type(func) is FunctionType and code is not None and not func.__dict__:
        skip = 1 if type(handler) is MethodType else 0
        problem = _arity_problem(code, skip, func, count)
    else:
        problem = _signature_problem(handler, count)
    if problem is not None:
        raise InvalidHandlerError(f"{handler_name(handler)} {problem}; {expected}")


def _shape(handler: Callable[..., Any]) -> _Shape:
    """(is a coroutine function, wants the envelope, why it cannot take one argument).

    A plain function or bound method is read from its code object once (cached); other
    callables (``functools.partial``, objects with ``__call__``, decorated functions, builtins)
    through :func:`inspect` each time. The last plain function asked about is remembered
    with its code and first parameter's annotation, so subscribing one function again and
    again (to many topics) skips even the cache lookup.
    """
    global _last_shape
    last = _last_shape  # one read: another thread may replace it meanwhile
    if (
        handler is last[0]
        and not handler.__dict__
        and handler.__code__ is last[1]
        and (last[2] is None or handler.__annotations__.get(last[2]) is last[3])
    ):
        return last[4]
    kind = type(handler)
    func: Any = handler.__func__ if kind is MethodType else handler  # type: ignore[attr-defined]
    if type(func) is FunctionType and not func.__dict__:  # no marker, no __wrapped__
        code = func.__code__
        skip = 1 if kind is MethodType else 0
        shapes = _shapes[skip]
        cached = shapes.get(id(code))
        annotations = func.__annotations__
        if cached is not None:
            _, (first, annotation), shape = cached
            if first is None or annotations.get(first) is annotation:
                if kind is FunctionType:
                    _last_shape = (handler, code, first, annotation, shape)
                return shape
        names = code.co_varnames[skip : code.co_argcount]
        first = names[0] if names else None
        shape = (
            bool(code.co_flags & inspect.CO_COROUTINE),
            _wants_envelope(handler),
            _arity_problem(code, skip, func, 1),
        )
        if len(shapes) >= _CACHE_LIMIT:
            shapes.clear()
        shapes[id(code)] = (code, (first, annotations.get(first) if first else None), shape)
        if kind is FunctionType:
            _last_shape = (handler, code, first, annotations.get(first) if first else None, shape)
        return shape
    return _is_async(handler), _wants_envelope(handler), _signature_problem(handler, 1)


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """A snapshot of one subscription's counters.

    Attributes:
        name: the handler's qualified name.
        pattern: the topic or pattern subscribed to.
        mode: the delivery mode.
        delivered: handler calls that returned without raising (an event in a batch counts
            once; an async handler counts when it is started and stops counting if it fails).
        failed: handler calls that raised.
        dropped: events the overflow policy discarded, calls a middleware dropped
            (:class:`~tidings.middleware.RateLimit` ``policy="drop"``,
            :class:`~tidings.middleware.Dedupe`), and events an interrupted dispatch left
            undelivered (:meth:`~tidings.dispatch.FailureReporter.interrupted`).
        queue_depth: events waiting in the subscription's buffer (queued mode).
        high_water: the most events its buffer ever held at once (every partition together,
            with ``workers > 1``).
    """

    name: str
    pattern: str
    mode: Mode
    delivered: int
    failed: int
    dropped: int
    queue_depth: int
    high_water: int


class Subscription(Generic[T]):
    """A handler's subscription to a topic, a pattern or an event class.

    Returned by :meth:`Bus.subscribe <tidings.Bus.subscribe>`. ``cancel()`` is idempotent and
    thread-safe; ``with bus.subscribe(...):`` cancels on exit. Cancelling takes effect for
    every event published after ``cancel()`` returns; a queued subscription's buffer is
    closed and its workers finish what it holds.

    Attributes:
        id: a number unique within the process.
        pattern: the topic or pattern subscribed to (for an event class, its topic).
        event_type: the event class subscribed to, or ``None`` for a topic or pattern.
        handler: the handler (``None`` when it is a weakly held bound method).
        priority: higher runs first; ties run in subscription order.
        is_async: whether the handler is a coroutine function.
        wants_envelope: whether the handler receives envelopes instead of payloads.
        mode: ``"inline"``, ``"task"`` or ``"queued"``.
    """

    __slots__ = (
        "__weakref__",
        "_bus",
        "_chain",
        "_counts",
        "_once",
        "_owner_ref",
        "_weak",
        "_where",
        "active",
        "event_type",
        "handler",
        "id",
        "is_async",
        "kind",
        "pattern",
        "priority",
        "queued",
        "wants_envelope",
    )

    def __init__(
        self,
        bus: SubscriptionOwner | None,
        target: type[T] | str,
        handler: Callable[..., Any],
        priority: float,
        where: Callable[[Any], bool] | None,
        once: bool,
        weak: bool | None,
        owner: object | None,
        envelope: bool | None,
        mode: Mode | None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        if not callable(handler):
            raise InvalidHandlerError(
                f"handler must be callable, not {type(handler).__name__} {handler!r}"
            )
        is_async, wants_envelope, problem = _shape(handler)
        if problem is not None:
            raise InvalidHandlerError(f"{handler_name(handler)} {problem}; {_CALL_RULE}")
        if type(priority) is not int and (
            isinstance(priority, bool)
            or not isinstance(priority, int | float)
            or math.isnan(priority)
        ):
            raise InvalidHandlerError(
                f"priority= must be an int or a float (higher runs first), not "
                f"{type(priority).__name__} {priority!r}"
            )
        if once is not False and once is not True:
            raise InvalidHandlerError(f"once= must be True or False, not {once!r}")
        if where is not None and not callable(where):
            raise InvalidHandlerError(
                f"where= must be a callable taking the event and returning a bool, "
                f"not {type(where).__name__}"
            )
        if type(target) is str:
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
        self._bus = bus
        self.id = next(_ids)
        self.priority = priority
        self.active = True
        self.is_async = is_async
        self.wants_envelope = wants_envelope if envelope is None else envelope
        self._where = where
        self._once = [True] if once else None
        self._owner_ref: weakref.ref[Any] | None = None
        self._counts: _Counts | None = None
        self.queued: Queued | None = None
        if owner is not None:
            try:
                self._owner_ref = weakref.ref(owner, self._owner_gone)
            except TypeError:
                raise InvalidHandlerError(
                    f"owner= must support weak references; {type(owner).__name__} does not "
                    "(add '__weakref__' to its __slots__)"
                ) from None
        hold_weakly = (
            type(handler) is MethodType and not isinstance(handler.__self__, type)
            if weak is None
            else weak
        )
        self.handler: Callable[..., Any] | None = handler
        # A weakly held bound method: a weak reference to its object, and its function.
        self._weak: tuple[weakref.ref[Any], Callable[..., Any]] | None = None
        if hold_weakly:
            if not inspect.ismethod(handler):
                raise InvalidHandlerError(
                    f"weak=True holds bound methods weakly; {handler_name(handler)} is not a "
                    "bound method"
                )
            try:
                ref = weakref.ref(handler.__self__, self._owner_gone)
            except TypeError:
                raise InvalidHandlerError(
                    f"cannot hold {handler_name(handler)} weakly: "
                    f"{type(handler.__self__).__name__} objects do not support weak "
                    "references; pass weak=False to hold it strongly"
                ) from None
            self._weak = (ref, handler.__func__)
            self.handler = None
        if mode is None:
            self.kind = TASK if is_async else INLINE
        else:
            self.kind = self._kind_of(mode)
        self._chain: Handler | None = None
        given: object = middleware  # annotations are not enforced at run time
        if type(given) is not tuple and (isinstance(given, str) or not isinstance(given, Sequence)):
            raise InvalidHandlerError(
                f"middleware= takes a list of middleware (handler -> handler), not "
                f"{type(given).__name__} {given!r}"
            )
        if middleware:
            self._chain = self._counting_drops(
                compose(self._innermost(), middleware, name=self.name)
            )
            self.__class__ = _ComposedSubscription

    def _kind_of(self, mode: object) -> int:
        """The kind (:data:`INLINE`, :data:`TASK`, :data:`QUEUED`) of an explicit ``mode=``.

        Raises:
            InvalidHandlerError: if ``mode`` is unknown or does not fit the handler.
        """
        if mode == "task" and not self.is_async:
            raise InvalidHandlerError(
                f"mode='task' runs coroutine functions; {self.name} is not one "
                "(use mode='inline' or mode='queued')"
            )
        if mode == "inline" and self.is_async:
            raise InvalidHandlerError(
                f"mode='inline' runs sync handlers; {self.name} is a coroutine function "
                "(use mode='task' or mode='queued')"
            )
        if mode not in _MODES:
            raise InvalidHandlerError(f"mode must be 'inline', 'task' or 'queued', not {mode!r}")
        return _MODES.index(mode)

    def wrap(self, *middleware: Middleware) -> None:
        """Wrap this subscription's handler (and any middleware it has) in ``middleware``,
        outermost: the hook for a part that must reach existing subscriptions (an observer
        installed late). The subscription stops being plain, so whoever calls this rebuilds
        the bus's routes before the next dispatch. Not for batch handlers.

        Raises:
            InvalidHandlerError: for a batch handler, or a middleware refusing the handler.
        """
        queued = self.queued
        if queued is not None and queued.batch is not None:
            raise InvalidHandlerError(f"{self.name} is a batch handler; it takes no middleware")
        inner = self._chain if self._chain is not None else self._innermost()
        self._chain = self._counting_drops(compose(inner, middleware, name=self.name))
        self.observe(self.observed)  # the class that calls through the chain

    def _counting_drops(self, chain: Handler) -> Handler:
        """An async ``chain`` whose awaited :data:`~tidings.middleware.DROPPED` (a middleware
        dropped the call) is counted here as dropped and becomes :data:`SKIP`, which no
        delivery path counts as delivered; a sync chain as it is (its drops are seen by
        :meth:`_ComposedSubscription.call <Subscription.call>`, without a wrapper)."""
        if not self.is_async:
            return chain

        async def counting_drops(env: Envelope[Any]) -> Any:
            result = await chain(env)
            if result is DROPPED:
                self.record_dropped()
                return SKIP
            return result

        return counting_drops

    def _innermost(self) -> Handler:
        """The handler at the core of a middleware chain: takes the envelope and calls the
        subscribed handler with what it asked for, as an unobserved, uncomposed call."""
        call, argument = Subscription.call, Subscription.argument
        target = self.handler  # None when held weakly
        whole = self.wants_envelope

        async def call_async(env: Envelope[Any]) -> Any:
            if target is not None:  # held strongly: called straight, two calls fewer
                return await target(env if whole else env.payload)
            result = call(self, argument(self, env))
            return None if result is SKIP else await result

        def call_sync(env: Envelope[Any]) -> Any:
            if target is not None:
                return target(env if whole else env.payload)
            return call(self, argument(self, env))

        handler: Handler = call_async if self.is_async else call_sync
        func = self.handler if self._weak is None else self._weak[1]
        for name in ("__module__", "__name__", "__qualname__"):
            value = getattr(func, name, None)
            if isinstance(value, str):
                setattr(handler, name, value)
        return handler

    @property
    def name(self) -> str:
        """The handler's qualified name, ``module.qualname``."""
        handler = self.handler
        if handler is None:
            assert self._weak is not None
            handler = self._weak[1]
        return handler_name(handler)

    @property
    def mode(self) -> Mode:
        """The delivery mode."""
        mode: Mode = _MODES[self.kind]
        return mode

    @property
    def plain(self) -> bool:
        """Whether the bus may call the handler directly with the payload (no filter, no
        once, no weak reference, no envelope, not queued)."""
        return (
            self.kind != QUEUED
            and self._weak is None
            and self._where is None
            and self._once is None
            and not self.wants_envelope
        )

    def matches(self, topic: str, event_type: type) -> bool:
        """Whether an event of ``event_type`` published on ``topic`` is delivered here."""
        if not compile_pattern(self.pattern)(topic):
            return False
        return self.event_type is None or issubclass(event_type, self.event_type)

    def accepts(self, env: Envelope[Any]) -> bool:
        """Apply ``where=`` and ``once=``: whether this envelope is for the handler.

        A ``once`` subscription accepts exactly one envelope, even across threads, and
        cancels itself as it does. A queued one leaves the routes at once but keeps its
        buffer open for that envelope: :meth:`Queued.offer <tidings.delivery.Queued.offer>`
        closes it once the envelope is in, and its workers then handle it.
        """
        where = self._where
        if where is not None and not where(env.payload):
            return False
        once = self._once
        if once is not None:
            try:
                once.pop()
            except IndexError:
                return False
            if self.active:
                self.active = False
                if self._bus is not None:
                    self._bus.unsubscribe(self, close=self.queued is None)
        return True

    def call(self, arg: Any) -> Any:
        """Call the handler with ``arg``; :data:`SKIP` if its object was collected."""
        handler = self.handler
        if handler is not None:
            return handler(arg)
        assert self._weak is not None
        ref, func = self._weak
        obj = ref()
        return SKIP if obj is None else func(obj, arg)

    def argument(self, env: Envelope[Any]) -> Any:
        """What the handler receives for ``env``: the envelope or its payload."""
        return env if self.wants_envelope else env.payload

    # ------------------------------------------------------------------ observability hook

    def observe(self, observed: bool) -> None:
        """Route the bus's calls of this handler through the bus's observer, or stop.

        The hook of :mod:`tidings.observability`: once observed, :meth:`argument` returns the
        envelope and :meth:`call` hands it (or a batch's list of them) to
        ``observer.call(self, arg)`` (the observer of its :class:`SubscriptionOwner`), which calls the handler as before with
        :meth:`call_handler`. The bus's inlined fast paths still call a plain handler
        straight unless ``observer.inlines(self)`` says otherwise. An unobserved subscription
        pays nothing, not even a slot: observing swaps its class for a subclass that
        overrides the two methods.
        """
        composed = self._chain is not None
        if observed:
            self.__class__ = _ObservedComposedSubscription if composed else _ObservedSubscription
        else:
            self.__class__ = _ComposedSubscription if composed else Subscription

    @property
    def observable(self) -> bool:
        """Whether :mod:`tidings.observability` observes this subscription's calls: not a
        stream's (its reader consumes the buffer, no handler is called) nor one whose
        handler's object declares ``tidings_unobserved`` (:meth:`Bus.record`'s recorder)."""
        queued = self.queued
        if queued is not None and queued.external:
            return False
        owner = getattr(self.handler, "__self__", None)
        return not getattr(owner, "tidings_unobserved", False)

    @property
    def observed(self) -> bool:
        """Whether :meth:`observe` routes this subscription's calls to the bus's observer."""
        return isinstance(self, _ObservedSubscription)

    @property
    def composed(self) -> bool:
        """Whether the handler is called through middleware (see :mod:`tidings.middleware`)."""
        return self._chain is not None

    @property
    def chained(self) -> Handler | None:
        """The middleware chain a route may call straight with the envelope, in place of
        :meth:`call`, or ``None``: set only for an inline, unobserved subscription with
        middleware and nothing else between the bus and the chain (no filter, no once, no
        weak reference). Calling it is exactly what :meth:`call` would do: its result is
        :data:`~tidings.middleware.DROPPED` when a middleware dropped the call (then counted
        with :meth:`record_dropped`, not as delivered)."""
        return None

    def call_handler(self, envelopes: Any) -> Any:
        """Call the handler for an envelope or a list of envelopes, unobserved: with what
        it asked for (envelopes or payloads); :data:`SKIP` if its object was collected."""
        if type(envelopes) is list:
            return Subscription.call(self, [Subscription.argument(self, e) for e in envelopes])
        return Subscription.call(self, Subscription.argument(self, envelopes))

    def _owner_gone(self, _ref: weakref.ref[Any]) -> None:
        """Weakref callback: the owner (or the bound method's object) was collected.

        The cyclic garbage collector runs at any allocation, so this may run inside any code
        of this thread, even code holding one of the bus's locks: it takes no lock. It ends
        the subscription at once (no event dispatched after this sees it) and leaves its
        removal to the bus's next subscribe, cancel or route rebuild.
        """
        if self.active:
            self.active = False
            if self._bus is not None:
                self._bus.release(self)

    def cancel(self) -> None:
        """End the subscription. Idempotent; safe from any thread and from inside handlers."""
        if self.active:
            self.active = False
            if self._bus is not None:
                self._bus.unsubscribe(self)

    # ------------------------------------------------------------------ statistics

    def _stats(self) -> _Counts:
        counts = self._counts
        if counts is None:  # the first time: made once, under the lock
            _counts_lock.acquire()  # not ``with``: two calls fewer on a subscription's first route
            try:
                counts = self._counts
                if counts is None:
                    counts = self._counts = _Counts()
            finally:
                _counts_lock.release()
        return counts

    def delivery_counter(self) -> itertools.count[int]:
        """The counter of this subscription's own successful calls: each ``next()`` on it
        counts one (thread-safe). A route whose one subscription this is counts its
        fast-path dispatches here."""
        return self._stats().delivered

    def record_delivered(self, n: int = 1) -> None:
        """Count ``n`` successful handler calls (thread-safe)."""
        counts = self._stats()
        if n == 1:
            next(counts.delivered)
        else:
            with _counts_lock:
                counts.extra_delivered += n

    def record_failure(self) -> None:
        """Count one failed handler call (thread-safe)."""
        counts = self._stats()
        with _counts_lock:
            counts.failed += 1

    @property
    def delivered(self) -> int:
        """Handler calls that did not raise (see :class:`SubscriptionStatistics`)."""
        with _counts_lock:  # one read of both: a fold moves counts from one to the other
            routed = route_counters.delivered_locked(self)
            counts = self._counts
            if counts is None:
                return routed
            return (
                count_value(counts.delivered)
                + counts.extra_delivered
                + routed
                - counts.routed_failed
            )

    @property
    def failed(self) -> int:
        """How many times the handler raised."""
        counts = self._counts
        return 0 if counts is None else counts.failed

    def record_dropped(self) -> None:
        """Count one call a middleware dropped instead of calling the handler, or one event
        an interrupted dispatch dropped before it reached the handler (thread-safe)."""
        counts = self._stats()
        with _counts_lock:
            counts.dropped += 1

    def take_back_delivered(self) -> None:
        """Uncount one call counted as delivered when it started (an async handler) and
        dropped by a middleware after it suspended (thread-safe)."""
        counts = self._stats()
        with _counts_lock:
            counts.routed_failed += 1

    @property
    def dropped(self) -> int:
        """Calls a middleware dropped (a rate limit, a duplicate) and events an interrupted
        dispatch dropped, not counting events a queued subscription's overflow policy
        discarded (see :meth:`statistics`)."""
        counts = self._counts
        return 0 if counts is None else counts.dropped

    def record_routed_failure(self) -> None:
        """Count a failure of a call that a route counter had counted as delivered."""
        counts = self._stats()
        with _counts_lock:
            counts.failed += 1
            counts.routed_failed += 1

    def statistics(self) -> SubscriptionStatistics:
        """A snapshot of this subscription's counters."""
        queued = self.queued
        depth, high_water, dropped = (0, 0, 0) if queued is None else queued.levels()
        return SubscriptionStatistics(
            name=self.name,
            pattern=self.pattern,
            mode=self.mode,
            delivered=self.delivered,
            failed=self.failed,
            dropped=dropped + self.dropped,
            queue_depth=depth,
            high_water=high_water,
        )

    async def drained(self, timeout: float | None = None) -> bool:
        """Wait until a queued subscription has handled everything it accepted (or dropped
        it); whether it did within ``timeout`` seconds. Immediately true for other modes.

        Waits in a helper thread, so the event loop keeps running the subscription's async
        workers meanwhile.
        """
        queued = self.queued
        if queued is None or queued.external:
            return True
        return await asyncio.to_thread(
            queued.wait_handled, float("inf") if timeout is None else timeout
        )

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
        return f"<Subscription {self.id} {self.name} -> {self.pattern!r} {self.mode} {state}>"


class _ObservedSubscription(Subscription[T]):
    """A subscription whose calls go through its observer (see :meth:`Subscription.observe`)."""

    __slots__ = ()

    @property
    def plain(self) -> bool:
        bus = self._bus
        observer = None if bus is None else bus.observer
        return super().plain and (observer is None or observer.inlines(self))

    def argument(self, env: Envelope[Any]) -> Any:
        return env

    @property
    def chained(self) -> Handler | None:
        return None  # every call goes through the observer

    def call(self, arg: Any) -> Any:
        bus = self._bus
        observer = None if bus is None else bus.observer
        if observer is None:  # pragma: no cover - observe(False) restores the class
            return Subscription.call(self, arg)
        return observer.call(self, arg)


class _ComposedSubscription(Subscription[T]):
    """A subscription whose handler is called through its middleware chain with the
    envelope (see the module docstring)."""

    __slots__ = ()

    @property
    def plain(self) -> bool:
        return False

    def argument(self, env: Envelope[Any]) -> Any:
        return env

    def call(self, arg: Any) -> Any:
        weak = self._weak
        if weak is not None and weak[0]() is None:
            return SKIP
        chain = self._chain
        assert chain is not None
        result = chain(arg)
        if result is DROPPED:  # a sync middleware dropped the call (async: _counting_drops)
            self.record_dropped()
            return SKIP
        return result

    @property
    def chained(self) -> Handler | None:
        if (
            self.kind != INLINE
            or self._weak is not None
            or self._where is not None
            or self._once is not None
        ):
            return None
        return self._chain

    def call_handler(self, envelopes: Any) -> Any:
        if type(envelopes) is list:  # pragma: no cover - batch handlers take no middleware
            return Subscription.call_handler(self, envelopes)
        return _ComposedSubscription.call(self, envelopes)


class _ObservedComposedSubscription(_ObservedSubscription[T], _ComposedSubscription[T]):
    """Observed and composed: the observer's call goes through the middleware chain."""

    __slots__ = ()


class _Counts:
    """A subscription's counters, allocated on first use to keep idle subscriptions small
    (its first route allocates them: the commonest count, ``delivered``, is an
    ``itertools.count`` that ``next()`` advances without a lock; the others are ints changed
    under ``_counts_lock``, as failures and drops are rare)."""

    __slots__ = ("delivered", "dropped", "extra_delivered", "failed", "routed_failed")

    def __init__(self) -> None:
        self.delivered = itertools.count()
        self.failed = 0
        # Calls counted as delivered (by a route counter, or when an async handler started)
        # that then failed or were dropped: subtracted from delivered.
        self.routed_failed = 0
        self.dropped = 0  # calls a middleware dropped (DROPPED), events an interrupt dropped
        self.extra_delivered = 0


class RouteCounters:
    """Dispatch counters shared by the subscriptions of a route: O(1) per route.

    A route whose handlers are all plain counts each dispatch once, in one counter, instead
    of once per handler. The counter is registered here with the route's subscriptions
    (:meth:`open`: one dict insert, nothing per subscription); a subscription's
    ``delivered`` adds, when asked, the counters of the live routes it is in. When the route
    is freed its counter is :meth:`retire`-d (lock-free: a route may be freed by the garbage
    collector anywhere), and :meth:`fold` later moves its total into each subscription's own
    count. Reading and folding take the counters' lock, so a dispatch is counted exactly
    once at every moment: in a live counter or in the subscription's own count. Opening
    takes none (a dict store is atomic; a counter being opened has counted nothing yet).
    Reads use an index of the live counters by subscription, rebuilt after any change.
    """

    __slots__ = ("_index", "_live", "_newest", "_serials", "retired")

    def __init__(self) -> None:
        # Which live counters each subscription is in, built on a read from one pass over
        # them, and the newest counter it covers: reads between changes cost O(the
        # subscription's routes), as bus.statistics() over many subscriptions needs.
        self._index: tuple[int, dict[Subscription[Any], list[itertools.count[int]]]] | None = None
        self._newest = -1
        self._live: dict[int, tuple[tuple[Subscription[Any], ...], itertools.count[int]]] = {}
        self.retired: collections.deque[int] = collections.deque()
        """Keys of retired counters not folded yet (a test of it is cheaper than a call)."""
        self._serials = itertools.count()

    def open(self, subs: tuple[Subscription[Any], ...], counter: itertools.count[int]) -> int:
        """Register ``counter`` as counting deliveries to every one of ``subs``; its key."""
        key = next(self._serials)
        self._live[key] = (subs, counter)  # one dict store: atomic, no lock needed
        self._newest = key  # after the store: an index that misses it is seen as stale
        return key

    def retire(self, key: int) -> None:
        """The counter of ``key`` counts no more dispatches: fold it at the next
        :meth:`fold`. Takes no lock."""
        self.retired.append(key)

    def fold(self) -> None:
        """Move the totals of retired counters into their subscriptions' own counts."""
        retired = self.retired
        if not retired:
            return
        live = self._live
        with _counts_lock:
            while retired:
                try:
                    key = retired.popleft()
                except IndexError:  # another thread took the last one
                    return
                subs, counter = live.pop(key)
                self._index = None
                total = count_value(counter)
                if total:
                    for sub in subs:  # inlined: a route may hold many subscriptions
                        counts = sub._counts
                        if counts is None:
                            counts = sub._counts = _Counts()
                        counts.extra_delivered += total

    def delivered_locked(self, sub: Subscription[Any]) -> int:
        """What the live counters of the routes ``sub`` is in have counted (the caller holds
        the counters' lock: no fold meanwhile; a counter opened meanwhile has counted 0)."""
        index = self._index
        if index is None or index[0] != self._newest:
            newest = self._newest
            by_sub: dict[Subscription[Any], list[itertools.count[int]]] = {}
            for subs, counter in list(self._live.values()):
                for member in subs:
                    by_sub.setdefault(member, []).append(counter)
            index = self._index = (newest, by_sub)
        return sum(count_value(counter) for counter in index[1].get(sub, ()))


route_counters: Final = RouteCounters()
"""The process's route counters (routes of every bus)."""


def count_value(counter: itertools.count[int]) -> int:
    """How many times an ``itertools.count()`` started at 0 has been advanced.

    ``next()`` on a count is atomic, which makes it the cheapest exact thread-safe counter;
    its current value is only exposed through its repr.
    """
    return int(repr(counter)[6:-1])
