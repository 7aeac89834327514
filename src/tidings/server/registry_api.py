"""The schema registry's REST API on the gateway, and schema validation of POSTed events.

Served under ``/registry`` when the config says ``schemas: {registry: true}``: the subset
of Confluent Schema Registry's API that serializers and their clients use, so a client
pointed at ``http://GATEWAY/registry`` (``confluent_kafka.schema_registry``,
Java/Go serializers) works unchanged:

=========================================================  ====================================
``GET  /subjects``                                         subject names
``GET  /subjects/{subject}/versions``                      its versions
``GET  /subjects/{subject}/versions/{version|latest}``     one version
``POST /subjects/{subject}/versions``                      register (409: incompatible)
``POST /subjects/{subject}``                               look a schema up in a subject
``GET  /schemas/ids/{id}``                                 a schema by its global id
``POST /compatibility/subjects/{subject}/versions[/{v}]``  test a schema (``is_compatible``)
``GET|PUT /config[/{subject}]``                            compatibility mode
=========================================================  ====================================

Errors are Confluent's ``{"error_code", "message"}``: 40401 subject, 40402 version, 40403
schema not found (404); 409 incompatible (the message lists each rule and field); 42201
invalid schema, 42203 invalid compatibility level (422); 50001 log unreachable (500).

Access uses the gateway's tokens: ``Authorization: Bearer TOKEN`` (or HTTP Basic with the
token as password, as Confluent clients send it). Reading needs any valid token;
registering under ``<topic>-value`` or setting its mode needs the token to publish on
``<topic>``; setting the default mode needs publish on ``>``.

With ``schemas: {validate: true}``, every event ``POST /events`` accepts is checked
against its topic's registered schema (:class:`tidings.contracts.Validator`); an invalid
one gets a 400 problem naming the event, the field and the rule, and nothing of the
request is stored. Violations are counted in ``tidings_schema_violations_total``.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from tidings.contracts.errors import (
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaNotFoundError,
    SchemaViolationError,
)
from tidings.contracts.metrics import ViolationsCollector
from tidings.contracts.registry import RegisteredSchema, SchemaRegistry
from tidings.contracts.validation import Validator
from tidings.event import Envelope
from tidings.exceptions import MissingExtraError
from tidings.gateway.runner import Gateway
from tidings.server.access import Access, Caller
from tidings.server.problems import problem

__all__ = ("CONTENT_TYPE", "Contracts", "contracts_for", "openapi_paths")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error_code": code, "message": message}, status_code=status, media_type=CONTENT_TYPE
    )


def _ok(body: Any) -> JSONResponse:
    return JSONResponse(body, media_type=CONTENT_TYPE)


def _described(entry: RegisteredSchema) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": entry.subject,
        "version": entry.version,
        "id": entry.id,
        "schema": entry.schema,
    }
    if entry.schema_type != "AVRO":
        out["schemaType"] = entry.schema_type
    return out


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI 3.1 ``paths`` of the API under ``/registry`` (merged into the gateway's
    ``/openapi.json`` when it serves the registry)."""
    from tidings.contracts.compatibility import MODES

    error = {
        "description": "Confluent error: {error_code, message}",
        "content": {
            CONTENT_TYPE: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "error_code": {"type": "integer"},
                        "message": {"type": "string"},
                    },
                }
            }
        },
    }
    errors = {str(code): error for code in (401, 403, 404, 409, 422)}

    def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {CONTENT_TYPE: {"schema": schema}}}

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        content = {"schema": schema}
        return {"required": True, "content": {CONTENT_TYPE: content, "application/json": content}}

    described = {
        "type": "object",
        "properties": {
            "subject": {"type": "string"},
            "version": {"type": "integer"},
            "id": {"type": "integer"},
            "schema": {"type": "string"},
            "schemaType": {"type": "string"},
        },
    }
    schema_body = body(
        {
            "type": "object",
            "required": ["schema"],
            "properties": {
                "schema": {"type": "string", "description": "the schema, as a JSON string"},
                "schemaType": {"type": "string", "enum": ["AVRO", "JSON"]},
            },
        }
    )
    level_body = body(
        {
            "type": "object",
            "required": ["compatibility"],
            "properties": {"compatibility": {"type": "string", "enum": list(MODES)}},
        }
    )
    subject = {"name": "subject", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"anyOf": [{"type": "integer", "minimum": 1}, {"enum": ["latest"]}]},
    }
    compatible = {
        "description": "Whether the schema may be registered",
        "content": {
            CONTENT_TYPE: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "is_compatible": {"type": "boolean"},
                        "messages": {"type": "array", "items": {"type": "string"}},
                    },
                }
            }
        },
    }
    level = answer("A compatibility level", {"type": "object"})
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/registry/subjects": {
            "get": {
                "summary": "Subject names",
                "security": security,
                "responses": {
                    "200": answer("Subjects", {"type": "array", "items": {"type": "string"}}),
                    **errors,
                },
            }
        },
        "/registry/subjects/{subject}": {
            "post": {
                "summary": "Look a schema up in a subject",
                "parameters": [subject],
                "requestBody": schema_body,
                "responses": {"200": answer("The registered version", described), **errors},
            }
        },
        "/registry/subjects/{subject}/versions": {
            "get": {
                "summary": "A subject's versions",
                "parameters": [subject],
                "responses": {
                    "200": answer("Versions", {"type": "array", "items": {"type": "integer"}}),
                    **errors,
                },
            },
            "post": {
                "summary": "Register a schema (409 when incompatible)",
                "parameters": [subject],
                "requestBody": schema_body,
                "responses": {"200": answer("Registered: its id", described), **errors},
            },
        },
        "/registry/subjects/{subject}/versions/{version}": {
            "get": {
                "summary": "One version of a subject",
                "parameters": [subject, version],
                "responses": {"200": answer("The version", described), **errors},
            }
        },
        "/registry/schemas/ids/{id}": {
            "get": {
                "summary": "A schema by its global id",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {"200": answer("The schema", described), **errors},
            }
        },
        "/registry/compatibility/subjects/{subject}/versions": {
            "post": {
                "summary": "Test a schema against the subject's mode",
                "parameters": [subject],
                "requestBody": schema_body,
                "responses": {"200": compatible, **errors},
            }
        },
        "/registry/compatibility/subjects/{subject}/versions/{version}": {
            "post": {
                "summary": "Test a schema against one version",
                "parameters": [subject, version],
                "requestBody": schema_body,
                "responses": {"200": compatible, **errors},
            }
        },
        "/registry/config": {
            "get": {
                "summary": "The default compatibility level",
                "responses": {"200": level, **errors},
            },
            "put": {
                "summary": "Set the default compatibility level",
                "requestBody": level_body,
                "responses": {"200": level, **errors},
            },
        },
        "/registry/config/{subject}": {
            "get": {
                "summary": "A subject's compatibility level",
                "parameters": [subject],
                "responses": {"200": level, **errors},
            },
            "put": {
                "summary": "Set a subject's compatibility level",
                "parameters": [subject],
                "requestBody": level_body,
                "responses": {"200": level, **errors},
            },
        },
    }


def _topic_of(subject: str) -> str:
    for suffix in ("-value", "-key"):
        if subject.endswith(suffix):
            return subject[: -len(suffix)]
    return subject


class Contracts:
    """The registry and validator of one gateway (see the module docstring)."""

    def __init__(self, gateway: Gateway, guard: Access, *, serve: bool, validate: bool) -> None:
        schemas = gateway.table.config.schemas
        self.registry = SchemaRegistry(gateway.store, default_mode=schemas.compatibility)
        self.validator = Validator(self.registry) if validate else None
        self.serve = serve
        self._guard = guard

    # -- validation ------------------------------------------------------------------------

    async def refuse(self, envelopes: Sequence[Envelope[Any]]) -> Response | None:
        """A 400 problem for the first event breaking its schema, else ``None``."""
        validator = self.validator
        if validator is None:
            return None
        try:
            await self.registry.refresh()
        except RegistryUnavailableError as exc:
            return problem(503, str(exc))
        for index, envelope in enumerate(envelopes):
            try:
                validator.check(envelope, "http")
            except SchemaViolationError as exc:
                return problem(
                    400,
                    str(exc),
                    event=index,
                    id=envelope.id,
                    topic=exc.topic,
                    field=exc.field,
                    rule=exc.rule,
                    subject=exc.subject,
                    version=exc.version,
                )
        return None

    def collector(self) -> Collector:
        """``tidings_schema_violations_total{topic, boundary}``."""
        return ViolationsCollector(self.validator)

    # -- the REST API ----------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller | Response:
        header = request.headers.get("authorization")
        if header is not None and header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            header = "Bearer " + decoded.partition(":")[2]
        caller = self._guard.identify(header)
        if caller is None:
            return _error(401, 40101, "send a valid token: 'Authorization: Bearer TOKEN'")
        return caller

    def _may_write(self, caller: Caller, subject: str | None) -> Response | None:
        topic = ">" if subject is None else _topic_of(subject)
        if caller.may_publish(topic):
            return None
        return _error(
            403, 40301, f"token {caller.name!r} may not publish on {topic!r}, so may not change it"
        )

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError as exc:
            return _error(422, 42201, f"the request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(422, 42201, "the request body is a JSON object")
        return body

    async def _schema_of(self, request: Request) -> tuple[str, str] | Response:
        """``(schema text, schema type)`` of a request body, or the error answer."""
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        schema = body.get("schema")
        if not isinstance(schema, str):
            return _error(422, 42201, "the body needs 'schema', the schema as a JSON string")
        if body.get("references"):
            return _error(422, 42201, "schema references are not supported; inline them")
        return schema, str(body.get("schemaType") or "AVRO")

    def routes(self) -> Mount:
        """The API as one ``Mount`` at ``/registry``."""
        registry = self.registry

        async def handle(request: Request) -> Response:
            caller = self._caller(request)
            if isinstance(caller, Response):
                return caller
            try:
                return await self._dispatch(request, caller, registry)
            except SchemaNotFoundError as exc:
                return _error(404, exc.code, str(exc))
            except IncompatibleSchemaError as exc:
                return _error(409, 409, str(exc))
            except InvalidSchemaError as exc:
                return _error(422, 42201, str(exc))
            except RegistryUnavailableError as exc:
                return _error(500, 50001, str(exc))

        return Mount(
            "/registry",
            routes=[
                Route("/subjects", handle, methods=["GET"]),
                Route("/subjects/{subject}", handle, methods=["POST"]),
                Route("/subjects/{subject}/versions", handle, methods=["GET", "POST"]),
                Route("/subjects/{subject}/versions/{version}", handle, methods=["GET"]),
                Route("/schemas/ids/{id}", handle, methods=["GET"]),
                Route("/compatibility/subjects/{subject}/versions", handle, methods=["POST"]),
                Route(
                    "/compatibility/subjects/{subject}/versions/{version}",
                    handle,
                    methods=["POST"],
                ),
                Route("/config", handle, methods=["GET", "PUT"]),
                Route("/config/{subject}", handle, methods=["GET", "PUT"]),
            ],
        )

    async def _dispatch(
        self, request: Request, caller: Caller, registry: SchemaRegistry
    ) -> Response:
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        params = request.path_params
        subject: str | None = params.get("subject")
        method = request.method
        if "/schemas/ids/" in path:
            raw = params["id"]
            if not raw.isdigit():
                return _error(404, 40403, f"schema id {raw!r} is not an integer")
            entry = await registry.by_id(int(raw))
            found: dict[str, Any] = {"schema": entry.schema}
            if entry.schema_type != "AVRO":
                found["schemaType"] = entry.schema_type
            return _ok(found)
        if "/config" in path and "/compatibility/" not in path:
            if method == "GET":
                if subject is None:
                    return _ok({"compatibilityLevel": await registry.mode()})
                own = await registry.subject_mode(subject)
                if own is None and request.query_params.get("defaultToGlobal") != "true":
                    return _error(
                        404, 40408, f"subject {subject!r} has no compatibility level of its own"
                    )
                return _ok({"compatibilityLevel": own or await registry.mode()})
            refused = self._may_write(caller, subject)
            if refused is not None:
                return refused
            body = await self._body(request)
            if isinstance(body, Response):
                return body
            level = str(body.get("compatibility") or body.get("compatibilityLevel") or "")
            try:
                mode = await registry.set_mode(level.upper(), subject)
            except ValueError as exc:
                return _error(422, 42203, str(exc))
            return _ok({"compatibility": mode})
        if subject is None:
            return _ok(await registry.subjects())
        if path.startswith("/registry/compatibility/") or "/compatibility/" in path:
            given = await self._schema_of(request)
            if isinstance(given, Response):
                return given
            version = params.get("version")
            target: Any = None
            if version is not None:
                target = "latest" if version in ("latest", "-1") else _version(version)
                if target is None:
                    return _error(422, 42202, f"version {version!r} is not a version number")
            if subject not in await registry.subjects():
                if version is not None:
                    return _error(404, 40401, f"subject {subject!r} is not registered")
                return _ok({"is_compatible": True, "messages": []})
            breaks = await registry.check(subject, given[0], given[1], target)
            return _ok({"is_compatible": not breaks, "messages": [str(b) for b in breaks]})
        if path.endswith("/versions") and method == "POST":
            refused = self._may_write(caller, subject)
            if refused is not None:
                return refused
            given = await self._schema_of(request)
            if isinstance(given, Response):
                return given
            entry = await registry.register(subject, given[0], given[1])
            return _ok(_described(entry))
        if path.endswith("/versions"):
            return _ok(await registry.versions(subject))
        if "version" in params:
            raw = params["version"]
            number: int | Literal["latest"] | None = (
                "latest" if raw in ("latest", "-1") else _version(raw)
            )
            if number is None:
                return _error(422, 42202, f"version {raw!r} is not a version number")
            return _ok(_described(await registry.version(subject, number)))
        if method == "POST":
            given = await self._schema_of(request)
            if isinstance(given, Response):
                return given
            return _ok(_described(await registry.lookup(subject, given[0], given[1])))
        return _error(405, 405, f"{method} {path} is not part of the registry API")


def _version(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def contracts_for(gateway: Gateway, guard: Access) -> Contracts | None:
    """The gateway's :class:`Contracts` per its ``schemas:`` section, ``None`` when off.

    Raises:
        MissingExtraError: if the section is on and the ``contracts`` extra is missing.
    """
    schemas = gateway.table.config.schemas
    if not (schemas.registry or schemas.validate):
        return None
    if (
        importlib.util.find_spec("jsonschema") is None
        or importlib.util.find_spec("fastavro") is None
    ):
        raise MissingExtraError(
            "the config's schemas: section needs the contracts extra: "
            "pip install 'tidings[contracts]'"
        )
    return Contracts(gateway, guard, serve=schemas.registry, validate=schemas.validate)
