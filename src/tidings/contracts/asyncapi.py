"""AsyncAPI 3.0 documents of an application and of a gateway config.

:func:`application_document` describes what a Python application exchanges: every event
class declared in its module (:func:`tidings.event`) is a message on the channel of its
topic, with the class's JSON Schema as payload (named types in ``components.schemas``);
the application *sends* on each such channel, and *receives* on the pattern of every
subscription of its bus (when one is given). The bus's transport is the server (NATS:
``protocol: nats``).

:func:`gateway_document` describes a gateway config: the HTTP server (``POST /events``,
``GET /events`` as server-sent events) and the NATS transport when configured; the gateway
*receives* on the patterns its tokens may publish (``>`` without tokens) and on every
route's ``from``, and *sends* on every route's topic and NATS target and on the event
stream. Payloads are the schemas registered for a channel's topic when ``schemas`` is
given (as read from the registry), else any JSON value.

Every message is a CloudEvent in binary mode: its ``headers`` schema lists the ``ce-*``
attributes (``ce-dataschema`` names the version). Documents are plain dicts, valid
against the official AsyncAPI 3.0.0 JSON Schema (the tests check them with the schema
from npm's ``@asyncapi/specs``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from tidings.contracts.schemas import json_schema
from tidings.dataschema import schema_uri
from tidings.event import event_type_for, topic_of, version_of
from tidings.gateway.config import GatewayConfig, RouteConfig, TargetConfig

__all__ = ("ASYNCAPI_VERSION", "application_document", "event_classes", "gateway_document")

ASYNCAPI_VERSION = "3.0.0"

_CE_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes in binary mode",
    "properties": {
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-id": {"type": "string"},
        "ce-source": {"type": "string"},
        "ce-type": {"type": "string"},
        "ce-time": {"type": "string", "format": "date-time"},
        "ce-dataschema": {"type": "string"},
        "ce-partitionkey": {"type": "string"},
        "ce-hlc": {"type": "string"},
        "ce-traceparent": {"type": "string"},
        "content-type": {"type": "string"},
    },
    "required": ["ce-specversion", "ce-id", "ce-source", "ce-type"],
}


def _key(text: str) -> str:
    """A component key (``^[a-zA-Z0-9\\.\\-_]+$``) for ``text``."""
    key = re.sub(r"[^A-Za-z0-9._-]", "_", text.replace(">", "all").replace("*", "any"))
    return key or "all"


def event_classes(module: ModuleType) -> list[type]:
    """The event classes declared with :func:`tidings.event` that ``module`` holds, by topic."""
    found: dict[str, type] = {}
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "__tidings_topic__", None) is not None:
            topic = topic_of(value)
            if event_type_for(topic) is value:
                found[topic] = value
    return [found[t] for t in sorted(found)]


class _Builder:
    def __init__(self, title: str, version: str, description: str) -> None:
        self.doc: dict[str, Any] = {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {"title": title, "version": version, "description": description},
            "defaultContentType": "application/json",
        }
        self.servers: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}

    def payload(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """``schema`` with its ``$defs`` moved into ``components.schemas``."""
        defs = dict(schema.get("$defs", {}))
        for name, sub in defs.items():
            self.schemas.setdefault(_key(name), _rewrite(sub))
        rewritten: dict[str, Any] = _rewrite(
            {
                k: v
                for k, v in schema.items()
                if k not in ("$defs", "$schema") and not k.startswith("x-")
            }
        )
        return rewritten

    def message(self, name: str, payload: Any, *, title: str, extra: dict[str, Any]) -> str:
        key = _key(name)
        self.messages[key] = {
            "name": name,
            "title": title,
            "contentType": "application/json",
            "headers": _CE_HEADERS,
            "payload": payload,
            **extra,
        }
        return key

    def channel(self, address: str, messages: Iterable[str], description: str) -> str:
        key = _key(address)
        entry = self.channels.setdefault(
            key, {"address": address, "description": description, "messages": {}}
        )
        for message in messages:
            entry["messages"][message] = {"$ref": f"#/components/messages/{message}"}
        if self.servers:
            entry["servers"] = [{"$ref": f"#/servers/{s}"} for s in sorted(self.servers)]
        return key

    def operation(
        self, name: str, action: str, channel: str, summary: str, bindings: Any = None
    ) -> None:
        messages = [
            {"$ref": f"#/channels/{channel}/messages/{m}"}
            for m in self.channels[channel]["messages"]
        ]
        entry: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": messages,
        }
        if bindings:
            entry["bindings"] = bindings
        self.operations[_key(name)] = entry

    def build(self) -> dict[str, Any]:
        doc = dict(self.doc)
        if self.servers:
            doc["servers"] = self.servers
        doc["channels"] = self.channels
        doc["operations"] = self.operations
        components: dict[str, Any] = {"messages": self.messages}
        if self.schemas:
            components["schemas"] = self.schemas
        doc["components"] = components
        return doc


def _rewrite(node: Any) -> Any:
    """Local ``#/$defs/X`` references pointed at ``#/components/schemas/X``."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = "#/components/schemas/" + _key(v[len("#/$defs/") :])
            else:
                out[k] = _rewrite(v)
        return out
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def _class_message(builder: _Builder, cls: type) -> str:
    topic = topic_of(cls)
    version = version_of(cls)
    return builder.message(
        cls.__name__,
        builder.payload(json_schema(cls)),
        title=f"{cls.__name__} (version {version})",
        extra={
            "summary": (cls.__doc__ or "").strip().split("\n")[0] or f"an event on {topic}",
            "x-tidings-topic": topic,
            "x-tidings-version": version,
            "x-tidings-dataschema": schema_uri(topic, version),
        },
    )


def application_document(
    title: str,
    classes: Iterable[type],
    *,
    bus: Any = None,
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of an application (see the module docstring).

    Args:
        title: the application's name.
        classes: the event classes it publishes.
        bus: its :class:`tidings.Bus`, whose subscriptions are what it receives and whose
            transport is its server.
        version: the document's (the application's API) version.
    """
    builder = _Builder(title, version, f"Events of {title}, as CloudEvents (tidings).")
    if bus is not None:
        from tidings.bus import observation_port

        transport = observation_port(bus).transport
        server = None if transport is None else transport.server
        if transport is not None and server is not None:
            builder.servers[_key(transport.system)] = {
                "host": f"{server[0]}:{server[1]}",
                "protocol": transport.system,
                "description": f"the bus's {type(transport).__name__}",
            }
    by_topic: dict[str, str] = {}
    for cls in classes:
        message = _class_message(builder, cls)
        topic = topic_of(cls)
        by_topic[topic] = message
        channel = builder.channel(topic, [message], f"events of type {topic}")
        builder.operation(f"send.{topic}", "send", channel, f"publish {cls.__name__}")
    if bus is not None:
        from tidings.topics import compile_pattern

        for sub in bus.subscriptions():
            pattern = sub.pattern
            if pattern.startswith("tidings."):
                continue  # dead letters and the like: the bus's own
            matches = compile_pattern(pattern)
            if sub.event_type is not None:
                messages = [_class_message(builder, sub.event_type)]
            else:
                messages = [m for t, m in by_topic.items() if matches(t)] or [
                    builder.message(
                        "AnyEvent", {}, title="any event", extra={"summary": "any JSON data"}
                    )
                ]
            channel = builder.channel(pattern, messages, f"events on {pattern}")
            builder.operation(
                f"receive.{pattern}.{sub.name}", "receive", channel, f"handled by {sub.name}"
            )
    return builder.build()


def gateway_document(
    config: GatewayConfig, *, schemas: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of a gateway config (see the module docstring).

    Args:
        config: a :class:`tidings.gateway.GatewayConfig`.
        schemas: registered JSON Schemas by topic, used as the payloads of their channels.
    """
    builder = _Builder(
        "tidings gateway",
        "1.0.0",
        "The event gateway: CloudEvents in over HTTP (POST /events), routed by its config, "
        "out to topics, webhooks and NATS, and as server-sent events (GET /events).",
    )
    http = config.http
    builder.servers["gateway"] = {
        "host": f"{http.host}:{http.port}",
        "protocol": "http",
        "pathname": "/events",
        "description": "CloudEvents over HTTP: binary, structured and batch mode",
    }
    if config.transport:
        found = re.match(r"\w+://([^/]+)", config.transport)
        builder.servers["nats"] = {
            "host": found.group(1) if found else config.transport,
            "protocol": "nats",
            "description": "the gateway's transport",
        }
    known = dict(schemas or {})
    any_message = builder.message(
        "CloudEvent", {}, title="any CloudEvent", extra={"summary": "any JSON data"}
    )

    def messages_for(pattern: str) -> list[str]:
        if pattern in known:
            payload = builder.payload(known[pattern])
            return [builder.message(f"{pattern}.event", payload, title=pattern, extra={})]
        return [any_message]

    accepted = sorted({p for token in http.tokens for p in token.publish} or {">"})
    post = {"http": {"method": "POST", "bindingVersion": "0.3.0"}}
    for pattern in accepted:
        channel = builder.channel(pattern, messages_for(pattern), f"events accepted on {pattern}")
        builder.operation(f"accept.{pattern}", "receive", channel, "POST /events", post)
    for route in config.routes:
        for pattern in route.from_:
            channel = builder.channel(pattern, messages_for(pattern), f"events on {pattern}")
            builder.operation(
                f"route.{route.name}.from.{pattern}", "receive", channel, f"route {route.name}"
            )
        for index, target in enumerate(_targets(route)):
            if target.kind not in ("topic", "nats"):
                continue
            channel = builder.channel(
                target.address,
                messages_for(target.address),
                f"{target.kind} target of route {route.name}",
            )
            builder.operation(
                f"route.{route.name}.to.{index}", "send", channel, f"route {route.name}"
            )
    stream = {"http": {"method": "GET", "bindingVersion": "0.3.0"}}
    channel = builder.channel(">", [any_message], "every event")
    builder.operation("stream", "send", channel, "GET /events (server-sent events)", stream)
    return builder.build()


def _targets(route: RouteConfig) -> list[TargetConfig]:
    out = list(route.to)
    if route.split is not None:
        for variant in route.split.variants:
            out.extend(variant.to)
    return out
