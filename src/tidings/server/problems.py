"""Errors as ``application/problem+json`` (RFC 9457): :func:`problem`.

Every error the service answers names what was wrong in ``detail`` and, where one input is
at fault, says which in an extension member (``attribute``, ``limit``...).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ("PROBLEM", "problem")

PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A problem+json response with ``status``, its title, ``detail`` and ``extra`` members."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)
