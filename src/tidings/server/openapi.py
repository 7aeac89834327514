"""The service's OpenAPI 3.1 description, served at ``/openapi.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ("openapi",)

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def openapi(server_url: str, extra_paths: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI document, with ``server_url`` as its server and ``extra_paths`` (the
    routes of optional parts, e.g. the schema registry under ``/registry``) listed too."""
    event = {
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "minLength": 1},
            "type": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"},
            "subject": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string"},
            "data": {},
        },
    }
    errors = {str(code): _PROBLEM for code in (400, 401, 403, 409, 413, 429, 503)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidings gateway", "version": "1"},
        "servers": [{"url": server_url}],
        "components": {
            "schemas": {"CloudEvent": event},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": {"type": "object"}}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/events": {
                "post": {
                    "summary": "Accept CloudEvents (binary, structured or batch mode)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/cloudevents+json": {
                                "schema": {"$ref": "#/components/schemas/CloudEvent"}
                            },
                            "application/cloudevents-batch+json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/CloudEvent"},
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Stored durably; routed from the log",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **errors,
                    },
                },
                "get": {
                    "summary": "Server-sent events of the log (live, or after a position)",
                    "parameters": [
                        {"name": "topic", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {}},
                        },
                        **errors,
                    },
                },
            },
            "/config": {"get": {"responses": {"200": {"description": "Live config"}, **errors}}},
            "/healthz": {"get": {"responses": {"200": {"description": "Alive"}}}},
            "/readyz": {"get": {"responses": {"200": {"description": "Ready"}, "503": _PROBLEM}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
            **(extra_paths or {}),
        },
    }
