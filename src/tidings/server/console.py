"""The console: a live web page for the gateway at ``/`` (routes, traffic, events, dead
letters, config, health), and the JSON and server-sent-event endpoints it reads.

Endpoints (all but the page and its static files need a token, as the API does):

- ``GET /``: the page for a browser (``Accept: text/html``); other clients get the JSON
  index of the API (what ``/`` answered before the console).
- ``GET /console/static/...``: the page's script, styles and the vendored uPlot (package
  data; nothing is fetched from elsewhere at run time).
- ``POST /console/login`` (form field ``token``) sets an HttpOnly, ``SameSite=Strict``
  cookie holding the token, so that the page's ``EventSource`` (which cannot send headers)
  is authenticated; ``POST /console/logout`` clears it. Every endpoint also takes
  ``Authorization: Bearer``.
- ``GET /console/api/session``: who the caller is.
- ``GET /console/api/stream?topic=PATTERN&filter=CEL``: the page's one connection, server-sent
  events: ``overview`` and ``health`` every second, ``tail`` every half second.
- ``GET /console/api/log?topic=&filter=&after=N|since=RFC3339&limit=``: the log browser.
- ``GET /console/api/event/{position}``: one record in full.
- ``GET /console/api/dead-letters?before=N&limit=&state=all|open``: a page of dead letters
  (newest first, below position ``before``; ``next_before`` for the next page) and the
  counts by state, from the gateway's dead-letter index (503 while it is still reading
  the log after 10 s: its first use reads the whole log); ``POST /console/api/dead-letters/redrive`` and
  ``.../discard`` with ``{"positions": [...]}`` (JSON only: a cross-site form cannot post it).
  Requests to settle are served one at a time, so two concurrent redrives of one dead
  letter record one redrive (within one gateway process).
- ``GET /console/api/config``: the live config and its diff against the generation before.

Access: a token with no ``subscribe`` scope is refused every data endpoint (403); otherwise
the caller sees the routes whose ``from`` patterns, the topics and the dead-letter topics its
``subscribe`` scopes cover; redriving or discarding needs ``publish`` on the original topic.

The tail is bounded whatever the rate: each half second the server scans at most
:data:`TAIL_SCAN` of the newest records (those before are counted as ``skipped``) and sends
at most :data:`TAIL_SEND` of the matching ones (the rest counted as ``sampled_out``).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tidings.cloudevents import parse_time
from tidings.exceptions import CloudEventError, InvalidTopicError, StoreError
from tidings.gateway.dead_letters import RedriveError, discard, list_dead_letters, redrive
from tidings.gateway.expressions import CelError, Condition, compile_condition
from tidings.gateway.table import matches
from tidings.server.console_views import (
    config_view,
    event_view,
    health_view,
    overview_view,
    visible_dead_letter_topics,
)
from tidings.server.problems import problem
from tidings.topics import validate_pattern

if TYPE_CHECKING:
    from tidings.gateway.runner import Gateway
    from tidings.server.access import Access, Caller
    from tidings.store.records import StoredEvent

__all__ = ("COOKIE", "TAIL_SCAN", "TAIL_SEND", "console_routes")

COOKIE = "tidings_console"
"""The cookie the login form sets (the token, HttpOnly, SameSite=Strict)."""

TAIL_SCAN = 2000
"""At most this many of the newest records are scanned for the tail per tick."""

TAIL_SEND = 50
"""At most this many matching records are sent to the page per tick."""

_TAIL_EVERY = 0.5
_OVERVIEW_EVERY = 1.0
_LOG_LIMIT = 200
_DEAD_LIMIT = 200
_INDEX_WAIT = 10.0  # seconds a dead-letter request waits for the index to read the log

_PAGE_HEADERS = {
    "cache-control": "no-store",
    # defence in depth: the page renders data as text; this also refuses any inline script
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}

Endpoint = Callable[[Request], Awaitable[Response]]


def _asset(name: str) -> str:
    return (importlib.resources.files("tidings.server") / "console_assets" / name).read_text()


class _RefusedError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def console_routes(gateway: Gateway, guard: Access, index: Endpoint) -> list[BaseRoute]:
    """The console's routes over ``gateway``, checked by ``guard``; ``index`` answers ``/``
    for clients that do not ask for HTML."""
    page = _asset("index.html")
    settling = asyncio.Lock()

    def caller_of(request: Request) -> Caller:
        header = request.headers.get("authorization")
        if header is None and COOKIE in request.cookies:
            header = f"Bearer {request.cookies[COOKIE]}"
        caller = guard.identify(header)
        if caller is None:
            raise _RefusedError(
                problem(
                    401,
                    "log in with an API token (the form on the page, or send "
                    "'Authorization: Bearer TOKEN')",
                )
            )
        if not caller.subscribe:
            raise _RefusedError(
                problem(
                    403,
                    f"token {caller.name!r} has no subscribe scope, so the console shows it "
                    "nothing; use a token with a subscribe scope",
                )
            )
        return caller

    def guarded(handler: Callable[[Request, Caller], Awaitable[Response]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, caller_of(request))
            except _RefusedError as refused:
                return refused.response

        return endpoint

    async def root(request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(page, headers=_PAGE_HEADERS)
        return await index(request)

    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > 4096:
            return problem(413, "a login form is at most 4096 bytes")
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        token = form.get("token", [""])[0].strip()
        if guard.identify(f"Bearer {token}") is None:
            return problem(401, "that token is not valid; check it and log in again")
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return answer

    async def logout(request: Request) -> Response:
        answer = RedirectResponse("/", status_code=303)
        answer.delete_cookie(COOKIE)
        return answer

    async def session(request: Request, caller: Caller) -> Response:
        return _json(
            {"caller": caller.name, "open": guard.open, "generation": gateway.table.generation}
        )

    async def indexed() -> None:
        index = gateway.dead_letters
        if not await index.catch_up(_INDEX_WAIT):
            raise _RefusedError(
                problem(
                    503,
                    "the dead-letter index is still reading the log (at position "
                    f"{index.position}); try again in a moment",
                )
            )

    def filters(request: Request, caller: Caller) -> tuple[str, Condition | None]:
        pattern = request.query_params.get("topic") or ">"
        try:
            validate_pattern(pattern)
        except InvalidTopicError as exc:
            raise _RefusedError(problem(400, str(exc), parameter="topic")) from None
        if not caller.may_subscribe(pattern):
            raise _RefusedError(
                problem(403, f"token {caller.name!r} may not subscribe to {pattern!r}")
            )
        text = request.query_params.get("filter", "").strip()
        if not text:
            return pattern, None
        try:
            return pattern, compile_condition(text)
        except CelError as exc:
            raise _RefusedError(problem(400, str(exc), parameter="filter")) from None

    async def stream(request: Request, caller: Caller) -> Response:
        pattern, condition = filters(request, caller)
        return StreamingResponse(
            _stream(gateway, caller, pattern, condition),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def log(request: Request, caller: Caller) -> Response:
        pattern, condition = filters(request, caller)
        params = request.query_params
        raw_limit = params.get("limit", "50")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _LOG_LIMIT:
            return problem(400, f"'limit' is 1 to {_LOG_LIMIT}", parameter="limit")
        since: int | None = None
        after = 0
        if params.get("since"):
            try:
                since = parse_time(params["since"])
            except CloudEventError as exc:
                return problem(400, str(exc).replace("CloudEvents attribute 'time'", "'since'"))
        elif params.get("after"):
            if not params["after"].isdigit():
                return problem(400, "'after' is a log position (int >= 0)", parameter="after")
            after = int(params["after"])
        records: list[StoredEvent] = []
        scanned = after
        async for record in gateway.store.iter_read(
            after=after, topic=pattern, since=since, unknown="raw", page_size=500
        ):
            scanned = record.position
            if condition is None or matches(condition, record.envelope):
                records.append(record)
                if len(records) >= int(raw_limit):
                    break
        return _json(
            {"events": [event_view(r) for r in records], "next_after": scanned},
        )

    async def one_event(request: Request, caller: Caller) -> Response:
        raw = request.path_params["position"]
        found = await gateway.store.read(after=raw - 1, upto=raw, unknown="raw")
        if not found or not caller.may_subscribe(found[0].envelope.topic):
            return problem(404, f"no event at position {raw} that this token may see")
        return _json(event_view(found[0], full=True))

    async def dead_letters(request: Request, caller: Caller) -> Response:
        params = request.query_params
        raw_limit = params.get("limit", str(_DEAD_LIMIT))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _DEAD_LIMIT:
            return problem(400, f"'limit' is 1 to {_DEAD_LIMIT}", parameter="limit")
        raw_before = params.get("before", "")
        if raw_before and not raw_before.isdigit():
            return problem(400, "'before' is a log position (int > 0)", parameter="before")
        which = params.get("state", "all")
        if which not in ("all", "open"):
            return problem(400, "'state' is 'all' or 'open'", parameter="state")
        index = gateway.dead_letters
        await indexed()  # the topics found in the log are known once the index read it
        topics = visible_dead_letter_topics(gateway, caller)
        try:
            letters = await list_dead_letters(
                index,
                topics,
                before=int(raw_before) if raw_before else None,
                limit=int(raw_limit),
                states=None if which == "all" else ("open",),
            )
        except RedriveError as exc:
            return problem(exc.status, str(exc))
        counts = {"open": 0, "redriven": 0, "discarded": 0}
        shown = set(topics)
        for (topic, state), n in index.counts.items():
            if topic in shown:
                counts[state] += n
        full = len(letters) == int(raw_limit)
        return _json(
            {
                "dead_letters": letters,
                "counts": counts,
                "next_before": letters[-1]["position"] if letters and full else None,
                "indexed_position": index.position,
            }
        )

    async def settle(request: Request, caller: Caller) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return problem(415, 'send the positions as JSON: {"positions": [N, ...]}')
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError:
            return problem(400, "the body is not JSON", attribute="body")
        positions = body.get("positions") if isinstance(body, dict) else None
        if not isinstance(positions, list) or not all(
            isinstance(p, int) and p > 0 for p in positions
        ):
            return problem(400, "'positions' is a list of log positions (ints > 0)")
        action = request.path_params["action"]
        await indexed()
        topics = set(visible_dead_letter_topics(gateway, caller))
        async with settling:  # one at a time: a dead letter is settled once
            results = [
                await _settle_one(gateway, caller, topics, action, position, body)
                for position in positions
            ]
        status = 200 if all(r["ok"] for r in results) else 207
        return _json({"results": results}, status_code=status)

    async def config(request: Request, caller: Caller) -> Response:
        return _json(config_view(gateway))

    return [
        Route("/", root, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console/api/session", guarded(session), methods=["GET"]),
        Route("/console/api/stream", guarded(stream), methods=["GET"]),
        Route("/console/api/log", guarded(log), methods=["GET"]),
        Route("/console/api/event/{position:int}", guarded(one_event), methods=["GET"]),
        Route("/console/api/dead-letters", guarded(dead_letters), methods=["GET"]),
        Route(
            "/console/api/dead-letters/{action:str}",
            guarded(settle),
            methods=["POST"],
        ),
        Route("/console/api/config", guarded(config), methods=["GET"]),
        Mount(
            "/console/static",
            app=StaticFiles(packages=[("tidings.server", "console_assets")]),
            name="console-static",
        ),
    ]


async def _settle_one(
    gateway: Gateway,
    caller: Caller,
    topics: set[str],
    action: str,
    position: int,
    body: dict[str, Any],
) -> dict[str, Any]:
    found = await gateway.store.read(after=position - 1, upto=position, unknown="raw")
    if not found or found[0].envelope.topic not in topics:
        return {"position": position, "ok": False, "message": f"no dead letter at {position}"}
    event = (
        found[0].envelope.payload.get("event")
        if isinstance(found[0].envelope.payload, dict)
        else None
    )
    original = event.get("type", "") if isinstance(event, dict) else ""
    if not caller.may_publish(str(original)):
        return {
            "position": position,
            "ok": False,
            "message": f"token {caller.name!r} may not publish on {original!r}, so it may not "
            f"{action} this dead letter",
        }
    try:
        if action == "redrive":
            await redrive(gateway.bus, gateway.table, gateway.dead_letters, position, caller.name)
            message = "redrive recorded; the gateway sends it through its route now"
        elif action == "discard":
            reason = str(body.get("reason", ""))[:500]
            await discard(gateway.bus, gateway.dead_letters, position, caller.name, reason)
            message = "discarded (recorded in the log; the dead letter stays there)"
        else:
            return {"position": position, "ok": False, "message": "action: redrive or discard"}
    except RedriveError as exc:
        return {"position": position, "ok": False, "message": str(exc)}
    return {"position": position, "ok": True, "message": message}


def _json(data: Any, status_code: int = 200) -> Response:
    """JSON by msgspec (payloads may hold bytes: they go as base64 text)."""
    return Response(msgspec.json.encode(data), status_code, media_type="application/json")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: ".encode() + msgspec.json.encode(data) + b"\n\n"


async def _tail(
    gateway: Gateway, cursor: int, pattern: str, condition: Condition | None
) -> tuple[int, dict[str, Any] | None]:
    last = await gateway.store.last_position()
    if last <= cursor:
        return cursor, None
    start = max(cursor, last - TAIL_SCAN)
    records = await gateway.store.read(after=start, upto=last, topic=pattern, unknown="raw")
    if condition is not None:
        records = [r for r in records if matches(condition, r.envelope)]
    sent = records[-TAIL_SEND:]
    return last, {
        "events": [event_view(r) for r in sent],
        "matched": len(records),
        "sampled_out": len(records) - len(sent),
        "skipped": start - cursor,
        "position": last,
    }


async def _stream(
    gateway: Gateway, caller: Caller, pattern: str, condition: Condition | None
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    yield b"retry: 1000\n\n"
    try:
        cursor = await gateway.store.last_position()
        yield _sse("hello", {"caller": caller.name, "position": cursor})
        due = 0.0
        while not gateway.store.closed:
            if loop.time() >= due:
                due = loop.time() + _OVERVIEW_EVERY
                yield _sse("overview", overview_view(gateway, caller))
                yield _sse("health", await health_view(gateway))
            cursor, tail = await _tail(gateway, cursor, pattern, condition)
            if tail is not None:
                yield _sse("tail", tail)
            await asyncio.sleep(_TAIL_EVERY)
    except StoreError:
        return  # the store closed: the gateway is stopping; the page reconnects
