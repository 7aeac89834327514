"""The gateway's ASGI application (Starlette): :func:`create_app`.

Endpoints:

- ``POST /events``: CloudEvents in binary mode (``ce-*`` headers), structured mode
  (``application/cloudevents+json``) or batch mode (``application/cloudevents-batch+json``).
  Answers ``202 {"ids": [...], "positions": [...]}`` once every event is appended to the
  log; the log is idempotent on the event id, so a retried POST is stored and routed once.
  Checks, in order: token (401), body size (413, counted while reading: a body over
  ``max_body`` is never read whole), CloudEvent validity (400 naming the attribute), scope
  (403), rate limit (429 with ``Retry-After``), readiness (503); an id already in the log
  from another source is a 409 listing the conflicts and what of the batch was stored.
- ``GET /events?topic=PATTERN&after=N``: the log as server-sent events, each with
  ``id: POSITION``, ``event: TOPIC`` and the structured CloudEvent as ``data``. Without
  ``after`` (or ``Last-Event-ID``, which wins) the stream starts live, at the end of the log.
- ``GET /config``: the live config, its generation, when it was loaded, the last error.
- ``GET /``: the console for a browser (:mod:`tidings.server.console`), else a JSON index.
- ``GET /metrics``, ``/healthz``, ``/readyz`` (503 until the gateway follows its log, and
  while its transport, if it has one, is reconnecting or disconnected; ``routing`` says
  whether this replica holds the routing lease), ``/openapi.json``.

Every error is ``application/problem+json`` (:mod:`tidings.server.problems`).

``POST /events`` is served straight from the ASGI scope (the hot path of intake), by the same
handler as its Starlette route, which serves it instead once middleware was added.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tidings.cloudevents import to_cloudevent
from tidings.exceptions import CloudEventError, DecodeError, InvalidTopicError, StoreError
from tidings.gateway.runner import EventIdConflictError, Gateway
from tidings.server.access import ANONYMOUS, Access, Caller
from tidings.server.console import console_routes
from tidings.server.openapi import openapi
from tidings.server.problems import problem
from tidings.server.registry_api import contracts_for, openapi_paths
from tidings.server.telemetry import registry_for
from tidings.topics import validate_pattern
from tidings.transports.http import decode_request

__all__ = ("create_app",)


_encode = msgspec.json.Encoder().encode


class _BodyTooLargeError(Exception):
    pass


async def _read_body(headers: Mapping[str, str], receive: Receive, limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError
    # The ASGI messages read straight (as Request.stream does, without an async generator
    # per request): the body usually comes whole in the first one.
    message = await receive()
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)
        message = await receive()


def create_app(gateway: Gateway, access: Access | None = None) -> Starlette:
    """The Starlette application serving ``gateway`` (see the module docstring).

    ``access`` defaults to the tokens and rate limit of the gateway's config.
    """
    http = gateway.table.config.http
    guard = access if access is not None else Access(http.tokens, http.rate_limit)
    max_body = http.max_body
    registry = registry_for(gateway)
    contracts = contracts_for(gateway, guard)
    if contracts is not None:
        registry.register(contracts.collector())
    serves_registry = contracts is not None and contracts.serve
    extra_paths = openapi_paths() if serves_registry else None

    def caller_of(request: Request) -> Caller | Response:
        return caller_from(request.headers)

    def caller_from(headers: Mapping[str, str]) -> Caller | Response:
        if guard.open:  # no token to look for
            return ANONYMOUS
        caller = guard.identify(headers.get("authorization"))
        if caller is None:
            given = "authorization" in headers
            return problem(
                401,
                "the bearer token is not valid" if given else "send 'Authorization: Bearer TOKEN'",
                headers={"www-authenticate": "Bearer"},
            )
        return caller

    async def take_events(headers: Mapping[str, str], receive: Receive) -> Response | bytes:
        """``POST /events``: an error response, or the body of the 202 (the events are
        durable in the log)."""
        caller = caller_from(headers)
        if isinstance(caller, Response):
            return caller
        try:
            body = await _read_body(headers, receive, max_body)
        except _BodyTooLargeError:
            return problem(
                413, f"the body is larger than max_body ({max_body} bytes)", limit=max_body
            )
        try:
            envelopes = decode_request(headers, body)
        except CloudEventError as exc:
            return problem(400, str(exc), attribute=exc.attribute)
        except DecodeError as exc:
            return problem(400, f"the request body cannot be read: {exc}", attribute="body")
        for envelope in () if caller is ANONYMOUS else envelopes:  # anonymous: any topic
            if not caller.may_publish(envelope.topic):
                return problem(
                    403,
                    f"token {caller.name!r} may not publish on {envelope.topic!r}",
                    topic=envelope.topic,
                )
        if contracts is not None and (refused := await contracts.refuse(envelopes)) is not None:
            return refused
        wait = guard.throttle(caller, len(envelopes))
        if wait > 0:
            return problem(
                429,
                f"token {caller.name!r} is over its rate limit; retry later",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        if not gateway.ready:
            return problem(503, "the gateway is not ready (starting or stopping)")
        try:
            positions = await gateway.accept(envelopes)
        except EventIdConflictError as exc:
            return problem(
                409,
                str(exc),
                conflicts=[{"id": i, "source": s, "taken_by": o} for i, s, o in exc.conflicts],
                accepted={"ids": exc.accepted, "positions": exc.positions},
            )
        except StoreError as exc:
            return problem(503, f"the log did not take the events: {exc}")
        return _encode({"ids": [e.id for e in envelopes], "positions": positions})

    async def post_events(request: Request) -> Response:
        taken = await take_events(request.headers, request.receive)
        if isinstance(taken, Response):
            return taken
        return Response(taken, status_code=202, media_type="application/json")

    async def get_events(request: Request) -> Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        pattern = request.query_params.get("topic", ">")
        try:
            validate_pattern(pattern)
        except InvalidTopicError as exc:
            return problem(400, str(exc), parameter="topic")
        if not caller.may_subscribe(pattern):
            return problem(403, f"token {caller.name!r} may not subscribe to {pattern!r}")
        raw = request.headers.get("last-event-id") or request.query_params.get("after")
        if raw is None:
            after = await gateway.store.last_position()
        elif raw.isdigit():
            after = int(raw)
        else:
            return problem(
                400, f"'after' / Last-Event-ID is a log position (int >= 0), not {raw!r}"
            )
        return StreamingResponse(
            _sse(gateway, after, pattern),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def get_config(request: Request) -> Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        return JSONResponse(gateway.describe())

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not gateway.ready or gateway.store.closed:
            return problem(503, "not ready: the gateway is starting or stopping")
        health = gateway.bus.statistics().transport
        if health is not None and health.state in ("reconnecting", "disconnected"):
            why = f" ({health.last_error})" if health.last_error else ""
            return problem(503, f"not ready: the transport is {health.state}{why}")
        return JSONResponse(
            {"status": "ready", "generation": gateway.table.generation, "routing": gateway.routing}
        )

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi(str(request.base_url).rstrip("/"), extra_paths))

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "service": "tidings gateway",
                "endpoints": [
                    "/events",
                    "/config",
                    "/metrics",
                    "/healthz",
                    "/readyz",
                    "/openapi.json",
                    *(["/registry"] if serves_registry else []),
                ],
            }
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return _internal_error(exc)

    return _GatewayApp(
        take_events,
        routes=[
            Route("/events", post_events, methods=["POST"]),
            Route("/events", get_events, methods=["GET"]),
            Route("/config", get_config, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            *console_routes(gateway, guard, index),
            *([contracts.routes()] if contracts is not None and contracts.serve else []),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


async def _sse(gateway: Gateway, after: int, pattern: str) -> AsyncIterator[bytes]:
    yield b": tidings gateway event stream\n\n"
    encode = _encode
    async with gateway.store.subscribe(after=after, topic=pattern, unknown="raw") as records:
        async for record in records:
            data: dict[str, Any] = to_cloudevent(record.envelope)
            yield (
                f"id: {record.position}\nevent: {record.envelope.topic}\ndata: ".encode()
                + encode(data)
                + b"\n\n"
            )


class _GatewayApp(Starlette):
    """The gateway's Starlette application, with ``POST /events`` served straight from the
    ASGI scope: the same handler (``take_events``) as its route, without the middleware
    stack, routing, ``Request`` and ``Response`` objects per request (the hot path of
    intake). Errors still answer as the route's would: a problem response, and an
    unexpected exception a 500 problem, then raised for the server to log. Every other
    request, and every request once middleware was added, goes through Starlette."""

    def __init__(self, take_events: _TakeEvents, **options: Any) -> None:
        super().__init__(**options)
        self._take_events = take_events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/events"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.user_middleware
        ):
            await self._post_events(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _post_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        # ASGI header names are lower case. A repeated name is read as the route reads it,
        # through Starlette's ``Headers`` (``get`` the first value, ``items`` every one).
        raw = scope["headers"]
        headers: Mapping[str, str] = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in raw
        }
        if len(headers) != len(raw):
            headers = Headers(scope=scope)
        started = False
        try:
            taken = await self._take_events(headers, receive)
            if isinstance(taken, Response):
                started = True
                await taken(scope, receive, send)
                return
            started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": 202,
                    "headers": [
                        (b"content-length", str(len(taken)).encode()),
                        (b"content-type", b"application/json"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": taken})
        except Exception as exc:
            if not started:
                await _internal_error(exc)(scope, receive, send)
            raise


def _internal_error(exc: Exception) -> Response:
    return problem(500, f"internal error: {type(exc).__name__}")


_TakeEvents = Callable[[Mapping[str, str], Receive], Awaitable[Response | bytes]]
