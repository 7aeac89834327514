"""OpenTelemetry tracing of buses: :class:`Tracing`.

Needs the OpenTelemetry API: ``pip install 'tidings[otel]'`` (and an SDK, or any other
implementation, configured by the application to record anything).

::

    Tracing(bus)                                   # the global tracer provider
    Tracing(bus, tracer_provider=provider)         # or this one

**Spans**, named and attributed per the OpenTelemetry messaging semantic conventions (the
attribute names are the module constants below, checked by a test against
``opentelemetry-semantic-conventions``, which the API does not install):

- ``send <topic>`` (kind ``PRODUCER``) around each traced ``publish``/``emit``: attributes
  ``messaging.system`` (``tidings`` in process, ``nats`` over NATS),
  ``messaging.operation.type`` and ``.name`` (``send``), ``messaging.message.id`` (the event
  id) and what names the destination and the client (below). In process, the inline
  handlers run inside it.
- ``process <topic or pattern>`` (kind ``CONSUMER``) around each handler call, wherever the
  handler runs (inline, async, queued, in another process): a child of the event's creation
  context (the producer span) that also carries a *link* to it, as the conventions ask of a
  process span. Attributes: ``messaging.operation.type`` and ``.name`` ``process``,
  ``messaging.destination.template`` (the subscription's pattern, through the transport's
  :meth:`~tidings.transports.base.Transport.destination`: a subject filter over NATS),
  ``messaging.destination.subscription.name`` (the handler), ``messaging.message.id``,
  ``messaging.consumer.group.name`` (a transport group), ``tidings.delivery_attempt`` (a
  transport's delivery attempt), ``messaging.message.body.size`` (a transport's delivery:
  the length of the message body as received), and what names the destination and the
  client. An async handler's span lasts until it finishes, suspensions included; a batch
  handler gets one span with ``messaging.batch.message_count`` and a link to each event's
  trace. A handler's exception is recorded on its span, with status ``ERROR`` and
  ``error.type``.
- **Destination and client**, on both: ``messaging.destination.name`` is the broker's
  entity (the NATS subject, ``<prefix>.<topic>``; the topic in process), ``tidings.topic``
  the topic; ``messaging.client.id`` is the transport's client id (NATS: the id the server
  gave the connection) or else the bus's ``<source>/<node>``; ``server.address`` and
  ``server.port`` name the server connected to, with a transport that has one. All are read
  from the transport's public description (``destination``, ``server``, ``client_id``) when
  a span starts, so a reconnect to another server shows.
- **Body size is omitted** where it is not known for free: in process (the payload is never
  encoded), on ``send`` spans (the transport encodes after the span's attributes are set;
  encoding twice to measure would tax every publish) and on batch spans.

**Propagation.** The publisher's context (or the one in the ``traceparent`` header it passed
in ``headers=``) is injected with the global text-map propagator (W3C ``traceparent``,
``tracestate`` and ``baggage`` by default) into the envelope's headers, which travel with the
event in process, as ``ce-*`` headers over NATS and in the durable log. Each handler call
extracts it from the envelope, never from the ambient context: a handler with baggage sees
the publisher's baggage. A missing or malformed ``traceparent`` starts a new trace; a
malformed one is also counted (:attr:`Tracing.invalid_contexts`, and
``tidings_trace_context_invalid_total`` with metrics) and logged at debug level. Delivery
never fails because of it.

**Replays** link instead of parenting: an event handled again from the durable log gets a
span in the replaying context with a *link* to its original trace (the store runs its
deliveries inside :func:`replaying`).

**Cost.** Whether a publish is traced is decided before anything else, from the sampler:
a tracer provider that samples new traces traces every publish (a span costs microseconds);
one that samples no new trace (``ALWAYS_OFF``, ``TraceIdRatioBased(0)``, or ``ParentBased``
with either as root) traces a publish only inside a sampled span (or with a ``traceparent``
in its headers), and otherwise costs a look at the current context (whether it is empty,
then whether it holds a sampled span); with no SDK configured nothing is traced. An untraced event's inline
handlers take the bus's fast path untouched.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tidings.observability.tracing needs opentelemetry-api: install it with "
        "pip install 'tidings[otel]'"
    ) from exc

import tidings
from tidings.bus import observation_port
from tidings.observability._observer import DeliveryMark, Observer, PublishGate, replaying
from tidings.observability.logs import log_fields
from tidings.subscription import SKIP, Subscription, count_value

if TYPE_CHECKING:
    from tidings.bus import Bus
    from tidings.event import Envelope
    from tidings.results import Delivery

__all__ = ("Tracing", "replaying")  # replaying: re-exported for the durable log

logger = logging.getLogger("tidings.observability")

# Sampling modes: trace every publish / only inside a sampled span / none / no SDK yet.
_ALWAYS, _PARENT, _NEVER, _UNSET = range(4)
_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
try:  # the current context in one C call; the public function costs three Python calls more
    from opentelemetry.context import _RUNTIME_CONTEXT

    _current_context: Callable[[], Context] = _RUNTIME_CONTEXT._current_context.get  # type: ignore[attr-defined]
    _current_context()
except Exception:  # pragma: no cover - another OpenTelemetry version
    _current_context = otel_context.get_current
# Is a global tracer provider set yet: OpenTelemetry's private module attribute, read by
# name in C, no Python frame (true when this API keeps it elsewhere: then the gate decides).
_provider: Callable[[], object] = functools.partial(dict.get, vars(trace), "_TRACER_PROVIDER", True)
_TRUE: Callable[[], object] = itertools.repeat(True).__next__

# Attribute names of the messaging semantic conventions (the values of the constants of the
# same names in opentelemetry-semantic-conventions, which the API does not depend on: a test
# checks them against that package).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_DESTINATION_TEMPLATE = "messaging.destination.template"
MESSAGING_DESTINATION_SUBSCRIPTION_NAME = "messaging.destination.subscription.name"
MESSAGING_CONSUMER_GROUP_NAME = "messaging.consumer.group.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_MESSAGE_BODY_SIZE = "messaging.message.body.size"
MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
MESSAGING_CLIENT_ID = "messaging.client.id"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
# tidings' own attributes.
TIDINGS_TOPIC = "tidings.topic"
TIDINGS_DELIVERY_ATTEMPT = "tidings.delivery_attempt"
TIDINGS_REPLAY = "tidings.replay"


class Tracing:
    """Traces buses with OpenTelemetry (see the module docstring).

    Args:
        buses: buses to trace now; add more with :meth:`observe`.
        tracer_provider: where spans go; the global one (``trace.set_tracer_provider``)
            when ``None``, which may be configured after this is made.
        propagator: injects and extracts trace context; the global text-map propagator
            (``OTEL_PROPAGATORS``, W3C trace context and baggage by default) when ``None``.
    """

    def __init__(
        self,
        *buses: Bus,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("tidings", tidings.__version__, tracer_provider)
        self._propagator = propagator
        self._hooks: list[_BusTracing] = []
        self._mode = _UNSET
        self._resolve()
        for bus in buses:
            self.observe(bus)

    @property
    def invalid_contexts(self) -> int:
        """Malformed ``traceparent`` headers met on incoming events, over every bus."""
        return sum(hook.invalid_contexts for hook in self._hooks)

    def observe(self, bus: Bus) -> None:
        """Trace ``bus`` from now on. Idempotent."""
        observer = Observer.of(observation_port(bus))
        if observer.tracing is None:
            hook = _BusTracing(self, observer)
            self._hooks.append(hook)
            observer.tracing = hook
            observer.install()

    def forget(self, bus: Bus) -> None:
        """Stop tracing ``bus``. Idempotent."""
        observer = observation_port(bus).observer
        if observer is not None and isinstance(observer.tracing, _BusTracing):
            observer.tracing = None
            observer.install()

    # ------------------------------------------------------------------ sampling

    def _resolve(self) -> int:
        """Classify the tracer's sampler (see the module docstring); remembered unless no
        tracer provider is set yet."""
        tracer: Any = self._tracer
        proxied = isinstance(tracer, trace.ProxyTracer)
        if proxied:
            tracer = tracer._tracer  # the provider's tracer once one is set, else a no-op
        if isinstance(tracer, trace.NoOpTracer):
            self._mode = _UNSET if proxied else _NEVER
            return self._mode
        sampler = getattr(tracer, "sampler", None)
        description = sampler.get_description() if sampler is not None else ""
        root = description.removeprefix("ParentBased{root:")
        never = root.startswith(("AlwaysOffSampler", "TraceIdRatioBased{0}"))
        never = never or root.startswith("TraceIdRatioBased{0.0}")
        if not never:
            self._mode = _ALWAYS
        else:
            self._mode = _PARENT if root != description else _NEVER
        return self._mode

    def gate(self, headers: Mapping[str, str] | None) -> bool:
        """Whether a publish with ``headers``, made now, is traced."""
        mode = self._mode
        if mode == _ALWAYS:
            return True
        if mode == _UNSET:  # no SDK yet: one module attribute read, until there is one
            if getattr(trace, "_TRACER_PROVIDER", True) is None:
                return False
            mode = self._resolve()
            if mode == _ALWAYS:
                return True
        if mode != _PARENT:
            return False
        if headers is not None and "traceparent" in headers:
            return True
        span = _current_context().get(_SPAN_KEY)
        return span is not None and span.get_span_context().trace_flags.sampled  # type: ignore[attr-defined]

    def roots(self) -> bool:
        """Whether an event arriving without trace context starts a trace."""
        return self._mode == _ALWAYS


class _BusTracing:
    """The :class:`~tidings.observability._observer.TracingHook` of one bus."""

    def __init__(self, tracing: Tracing, observer: Observer) -> None:
        self._tracing = tracing
        self._tracer = tracing._tracer
        self._port = observer.port
        self._system = observer.system
        self._client_id = observer.port.client_id  # the bus's source and node: fixed
        self._invalid = itertools.count()
        # The last envelope's extracted context: its handlers, called one after another,
        # share one extraction (and a malformed traceparent is counted once per event).
        self._last: tuple[str, Context] | None = None
        self.gate = tracing.gate

    @property
    def invalid_contexts(self) -> int:
        return count_value(self._invalid)

    # ------------------------------------------------------------------ context

    def _inject(self, carrier: dict[str, str], ctx: Context) -> None:
        propagator = self._tracing._propagator
        if propagator is None:
            propagate.inject(carrier, context=ctx)
        else:
            propagator.inject(carrier, context=ctx)

    def _extract(self, headers: Mapping[str, str], env: Envelope[Any] | None) -> Context:
        """The context ``headers`` carry, on an empty base; counts a malformed traceparent
        (once per envelope ``env``, when given)."""
        last = self._last
        if env is not None and last is not None and last[0] == env.id:
            return last[1]
        propagator = self._tracing._propagator
        if propagator is None:
            ctx = propagate.extract(headers, context=Context())
        else:
            ctx = propagator.extract(headers, context=Context())
        if "traceparent" in headers and not trace.get_current_span(ctx).get_span_context().is_valid:
            next(self._invalid)
            logger.debug(
                "malformed traceparent %r: starting a new trace",
                headers["traceparent"][:100],
                extra=log_fields(env),
            )
        if env is not None:
            self._last = (env.id, ctx)
        return ctx

    def publish_gate(self, reinstall: Callable[[], None]) -> PublishGate | None:
        """The ``publish`` hook's test for the sampler's mode, each as cheap as it can be:
        none when nothing is ever sampled; a look at the current context (is it empty)
        when only children of sampled spans are; one dictionary read (in C) while no SDK
        is configured (the first publish that finds one resolves the mode and
        ``reinstall`` rebuilds the hook for it)."""
        tracing = self._tracing
        mode = tracing._mode
        if mode == _NEVER:
            return None
        gate = tracing.gate
        if mode == _ALWAYS:
            return _TRUE, gate
        if mode == _PARENT:
            # No headers and an empty current context (no span, no baggage: the usual case
            # outside any span) cannot be traced: one call into C and a truth test.
            return _current_context, gate

        def resolving(headers: Mapping[str, str] | None) -> bool:
            traced = gate(headers)  # an SDK now: this resolves the mode...
            if tracing._mode != _UNSET:
                reinstall()  # ...and the next publish takes the hook made for it
            return traced

        return _provider, resolving

    def traces(self, env: Envelope[Any]) -> bool:
        """Whether a handler call for ``env`` gets a span."""
        return "traceparent" in env.headers or self._tracing.roots()

    def _described(self, topic: str, attributes: dict[str, Any]) -> None:
        """Add to ``attributes`` what names the destination of ``topic`` and the client:
        the broker entity (the transport's, else the topic), the topic, the server
        connected to (with a transport that has one) and the client id."""
        transport = self._port.transport
        if transport is None:
            attributes[MESSAGING_DESTINATION_NAME] = topic
            attributes[MESSAGING_CLIENT_ID] = self._client_id
        else:
            attributes[MESSAGING_DESTINATION_NAME] = transport.destination(topic)
            attributes[MESSAGING_CLIENT_ID] = transport.client_id or self._client_id
            server = transport.server
            if server is not None:
                attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = server
        attributes[TIDINGS_TOPIC] = topic

    # ------------------------------------------------------------------ producer spans

    def _producer(
        self, topic: str, headers: Mapping[str, str] | None
    ) -> tuple[trace.Span, Context, dict[str, str]]:
        parent = _current_context()
        if headers is not None and "traceparent" in headers:
            given = self._extract(headers, None)
            if trace.get_current_span(given).get_span_context().is_valid:
                parent = given
        attributes: dict[str, Any] = {
            MESSAGING_SYSTEM: self._system,
            MESSAGING_OPERATION_TYPE: "send",
            MESSAGING_OPERATION_NAME: "send",
        }
        self._described(topic, attributes)
        span = self._tracer.start_span(
            f"send {topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        ctx = trace.set_span_in_context(span, parent)
        carrier = dict(headers) if headers else {}
        self._inject(carrier, ctx)
        return span, ctx, carrier

    def send(
        self,
        topic: str,
        headers: Mapping[str, str] | None,
        publish: Callable[[Mapping[str, str]], Envelope[Any]],
    ) -> Envelope[Any]:
        span, ctx, carrier = self._producer(topic, headers)
        token = otel_context.attach(ctx)
        try:
            env = publish(carrier)
        except Exception as exc:
            _failed(span, exc)
            raise
        else:
            span.set_attribute(MESSAGING_MESSAGE_ID, env.id)
        finally:
            otel_context.detach(token)
            span.end()
        return env

    async def asend(
        self,
        topic: str,
        headers: Mapping[str, str] | None,
        emit: Callable[[Mapping[str, str]], Awaitable[Delivery[Any]]],
    ) -> Delivery[Any]:
        span, ctx, carrier = self._producer(topic, headers)
        token = otel_context.attach(ctx)
        try:
            delivery = await emit(carrier)
        except Exception as exc:
            _failed(span, exc)
            raise
        else:
            span.set_attribute(MESSAGING_MESSAGE_ID, delivery.envelope.id)
        finally:
            otel_context.detach(token)
            span.end()
        return delivery

    # ------------------------------------------------------------------ consumer spans

    def process(
        self,
        sub: Subscription[Any],
        envs: Envelope[Any] | list[Envelope[Any]],
        delivery: DeliveryMark | None,
        call: Callable[[], Any],
    ) -> Any:
        transport = self._port.transport
        attributes: dict[str, Any] = {
            MESSAGING_SYSTEM: self._system,
            MESSAGING_OPERATION_TYPE: "process",
            MESSAGING_OPERATION_NAME: "process",
            MESSAGING_DESTINATION_TEMPLATE: (
                sub.pattern if transport is None else transport.destination(sub.pattern)
            ),
            MESSAGING_DESTINATION_SUBSCRIPTION_NAME: sub.name,
        }
        replay = delivery is not None and delivery[2]
        if delivery is not None and not replay:
            attributes[TIDINGS_DELIVERY_ATTEMPT] = delivery[0]
            if delivery[1] is not None:
                attributes[MESSAGING_CONSUMER_GROUP_NAME] = delivery[1]
            if delivery[3] is not None and not isinstance(envs, list):
                attributes[MESSAGING_MESSAGE_BODY_SIZE] = delivery[3]
        if isinstance(envs, list):
            parent = _current_context()
            links = _links(self._extract(e.headers, e) for e in envs)
            attributes[MESSAGING_BATCH_MESSAGE_COUNT] = len(envs)
            if envs:
                self._described(envs[0].topic, attributes)
        else:
            extracted = self._extract(envs.headers, envs)
            self._described(envs.topic, attributes)
            attributes[MESSAGING_MESSAGE_ID] = envs.id
            # The creation context is linked (as the conventions ask of a process span);
            # a live delivery also stays its child, a replay runs in the replaying context.
            links = _links((extracted,))
            if replay:
                parent = _current_context()
                attributes[TIDINGS_REPLAY] = True
            else:
                parent = extracted
        span = self._tracer.start_span(
            f"process {sub.pattern}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        ctx = trace.set_span_in_context(span, parent)
        if sub.is_async:
            try:
                coro = call()
            except Exception as exc:
                _failed(span, exc)
                span.end()
                raise
            if coro is SKIP:
                span.end()
                return SKIP
            runs_in = contextvars.copy_context()
            runs_in.run(otel_context.attach, ctx)
            return _in_span(span, runs_in, coro)
        token = otel_context.attach(ctx)
        try:
            return call()
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()


def _links(contexts: Iterator[Context] | tuple[Context, ...]) -> list[Link]:
    links = []
    for ctx in contexts:
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    return links


def _failed(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.set_attribute(ERROR_TYPE, f"{type(exc).__module__}.{type(exc).__qualname__}")


async def _in_span(span: trace.Span, ctx: contextvars.Context, coro: Any) -> Any:
    """Await ``coro`` with every step run in ``ctx`` (where ``span`` is current), then end
    the span. The steps may run in different contexts (an eager start in the publisher's,
    the rest in a task's): attaching to each of those would leak the span into them."""
    try:
        return await _InContext(coro, ctx)
    except Exception as exc:
        _failed(span, exc)
        raise
    finally:
        span.end()


class _InContext:
    """An awaitable driving a coroutine, each step inside ``ctx.run``, as a task would."""

    __slots__ = ("_coro", "_ctx")

    def __init__(self, coro: Any, ctx: contextvars.Context) -> None:
        self._coro = coro
        self._ctx = ctx

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run = self._coro, self._ctx.run
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value, error = None, exc
