"""Calling an ASGI application as an HTTP server would, without a server: for tests and
instruction counts of an app (``tidings serve``'s, or any Starlette app).

:func:`http_scope` is the scope of one HTTP/1.1 request; :func:`call_asgi` calls an app
once with it and returns the status and body. The request body is received whole, in one
``http.request`` message; any later ``receive`` reports ``http.disconnect`` (the client
is gone once its response is complete). Nothing here opens a socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = ("AsgiApp", "call_asgi", "http_scope")

AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
"""An ASGI 3 application: ``await app(scope, receive, send)``."""


def http_scope(
    method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> dict[str, Any]:
    """The ASGI scope of an HTTP/1.1 request ``method path`` from a loopback client, with
    ``headers`` (lower-case names, as ASGI has them) and no query string."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }


async def call_asgi(
    app: AsgiApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[int, bytes]:
    """Call ``app`` once with the request ``method path`` (``headers``, ``body``);
    ``(status, response body)``, the body joined from every message sent.

    Raises what ``app`` raises; an app that sends no response start is an
    :class:`AssertionError`.
    """
    request: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": body, "more_body": False}
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return request.pop() if request else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(http_scope(method, path, headers), receive, send)
    if not sent or sent[0]["type"] != "http.response.start":
        raise AssertionError(f"{method} {path}: the app sent no response")
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])
