"""What the console shows, as plain JSON-ready data: overview, events, config, health.

Pure readers of a :class:`~tidings.gateway.Gateway` (no HTTP here; :mod:`tidings.server.console`
serves these). Invariants:

- Nothing here changes the gateway or the log.
- Every value that reaches the page is data (strings, numbers, lists, maps); the page puts
  text into the DOM as text, never as markup.
- An event sent in a list is at most :data:`PREVIEW_LIMIT` bytes of payload; a larger one
  says so (``truncated``) and its detail is read by position.
- Secrets never leave: token secrets are not in the config (only the environment variable
  names), and a password in a store or transport URL is replaced by ``***`` wherever it
  would show (health, the config, its text and its diff).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import difflib
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import yaml

from tidings.gateway.config import GatewayConfig

if TYPE_CHECKING:
    from tidings.gateway.runner import Gateway
    from tidings.gateway.table import RouteTable
    from tidings.server.access import Caller
    from tidings.store.records import StoredEvent

__all__ = (
    "PREVIEW_LIMIT",
    "config_view",
    "event_view",
    "health_view",
    "overview_view",
    "trace_id",
    "visible_dead_letter_topics",
    "visible_routes",
)

PREVIEW_LIMIT = 16 * 1024
"""Payload bytes sent with an event in a list (the tail, the log browser)."""

_HEALTH_TIMEOUT = 2.0


def trace_id(headers: Mapping[str, str]) -> str | None:
    """The W3C trace id of ``traceparent`` (``00-TRACEID-SPANID-FLAGS``), if there is one."""
    parent = headers.get("traceparent")
    if parent is None:
        return None
    parts = parent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


def _shown(payload: Any) -> Any:
    """``payload`` as JSON values (bytes as base64 text); a payload of a class that does not
    map to JSON (an exception inside) as its ``repr``."""
    try:
        return msgspec.to_builtins(payload)
    except (TypeError, ValueError):
        return repr(payload)


def event_view(record: StoredEvent, *, full: bool = False) -> dict[str, Any]:
    """One log record for the page: envelope fields, trace id and payload (see the module
    docstring for ``truncated``; ``full`` sends the payload whatever its size)."""
    env = record.envelope
    payload = _shown(env.payload)
    size = len(msgspec.json.encode(payload))
    truncated = not full and size > PREVIEW_LIMIT
    return {
        "position": record.position,
        "id": env.id,
        "topic": env.topic,
        "time": env.datetime.isoformat().replace("+00:00", "Z"),
        "hlc": env.time,
        "key": env.key,
        "source": env.source,
        "headers": dict(env.headers),
        "trace_id": trace_id(env.headers),
        "payload": None if truncated else payload,
        "size": size,
        "truncated": truncated,
    }


def visible_routes(table: RouteTable, caller: Caller) -> list[str]:
    """The names of the routes whose every ``from`` pattern ``caller`` may subscribe to."""
    return [r.name for r in table.config.routes if all(caller.may_subscribe(p) for p in r.from_)]


def visible_dead_letter_topics(gateway: Gateway, caller: Caller) -> list[str]:
    """The dead-letter topics ``caller`` may subscribe to, of the gateway's tables since
    start and of every dead letter found in the log (a route removed before a restart)."""
    topics = gateway.dead_letter_topics | gateway.dead_letters.topics
    return sorted(t for t in topics if caller.may_subscribe(t))


def _route_shape(table: RouteTable, name: str) -> dict[str, Any]:
    route = table.find(name)
    assert route is not None
    split = route.split
    return {
        "from": list(route.from_),
        "when": route.when,
        "targets": [f"{t.kind}:{t.address}" for t in route.to],
        "dead_letter": route.dead_letter,
        "split": None
        if split is None
        else {"by": split.by, "variants": [v.name for v in split.variants]},
    }


def overview_view(gateway: Gateway, caller: Caller) -> dict[str, Any]:
    """Every route ``caller`` may see, with its live figures and series, and the gateway's
    counters."""
    table = gateway.table
    names = visible_routes(table, caller)
    snapshot = gateway.stats.snapshot(names)
    for route in snapshot["routes"]:
        route.update(_route_shape(table, route["name"]))
    snapshot.pop("targets")
    snapshot.update(
        generation=table.generation,
        accepted=gateway.accepted,
        routed=gateway.routed,
        ready=gateway.ready,
        last_error=gateway.last_error,
        started_at=gateway.started_at.isoformat().replace("+00:00", "Z"),
    )
    return snapshot


def _without_secret(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _transport_view(gateway: Gateway, url: str | None) -> dict[str, Any]:
    """The transport's connection as the bus reports it (``none`` without a transport)."""
    statistics = gateway.bus.statistics()
    health = statistics.transport
    if health is None:
        return {"state": "none", "url": _without_secret(url)}
    shown = "ok" if health.state == "connected" else health.state
    at = health.last_error_at
    view: dict[str, Any] = {
        "state": "failing" if health.state in ("reconnecting", "disconnected") else shown,
        "connection": health.state,
        "url": _without_secret(url),
        "server": _without_secret(health.server),
        "last_error": health.last_error,
        "last_error_at": None
        if at is None
        else _dt.datetime.fromtimestamp(at, _dt.UTC).isoformat().replace("+00:00", "Z"),
        "pending": health.pending,
        "disconnects": health.disconnects,
    }
    forwarding = statistics.forwarding
    if forwarding is not None:
        view["outbox"] = msgspec.to_builtins(forwarding)
    return view


async def health_view(gateway: Gateway) -> dict[str, Any]:
    """Store, transport, routing and webhook-target state at a glance.

    ``state`` is ``ok``, ``failing`` or ``unknown`` (a target not used since start, a
    transport that does not report its connection); the transport also has its
    ``connection`` (``connected``, ``reconnecting``, ``disconnected``), the server it uses
    (no credentials), its last error and ``pending`` publishes awaiting the server's ack."""
    config = gateway.table.config
    store: dict[str, Any] = {"url": _without_secret(config.store)}
    try:
        last = await asyncio.wait_for(gateway.store.last_position(), _HEALTH_TIMEOUT)
    except Exception as exc:
        store.update(state="failing", error=f"{type(exc).__name__}: {exc}")
        last = None
    else:
        store.update(state="ok", last_position=last)
    safe = gateway.safe_position()
    routing = {
        "state": "ok" if gateway.ready else "failing",
        "ready": gateway.ready,
        "routed_position": safe,
        "lag": None if last is None else max(0, last - safe),
    }
    transport = _transport_view(gateway, config.transport)
    seen = {(t["kind"], t["address"]): t for t in gateway.stats.snapshot(())["targets"]}
    targets = []
    for route in config.routes:
        for target in route.to:
            if target.kind != "webhook":
                continue
            known = seen.pop((target.kind, target.address), None)
            entry = known or {"kind": target.kind, "address": target.address, "state": "unknown"}
            targets.append({**entry, "route": route.name})
    targets.extend({**t, "route": None} for t in seen.values() if t["kind"] == "webhook")
    return {"store": store, "transport": transport, "routing": routing, "targets": targets}


def _plain(config: GatewayConfig) -> str:
    """The config as the operator wrote it (each file under a ``# FILE`` line), or, for one
    built in code, as YAML of its values."""
    if config.text:
        return "\n".join(
            f"# {src}\n{text}" for src, text in zip(config.sources, config.text, strict=False)
        )
    data = msgspec.to_builtins(config)
    for route in data.get("routes", []):
        for where in ("file", "line", "column"):
            route.pop(where, None)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def config_view(gateway: Gateway) -> dict[str, Any]:
    """The live config (``GET /config``'s body), its text (``text``), and a unified diff
    against the last generation whose config differed (``diff`` empty when there was none)."""
    out = gateway.describe()
    out["text"] = _plain(gateway.table.config)
    previous = gateway.previous
    if previous is None:
        out["previous_generation"] = None
        out["diff"] = []
        return _masked(out, gateway.table.config)
    out["previous_generation"] = previous.generation
    out["diff"] = list(
        difflib.unified_diff(
            _plain(previous.config).splitlines(),
            _plain(gateway.table.config).splitlines(),
            f"generation {previous.generation}",
            f"generation {gateway.table.generation}",
            lineterm="",
        )
    )
    return _masked(out, gateway.table.config, previous.config)


def _masked(data: dict[str, Any], *configs: GatewayConfig) -> dict[str, Any]:
    """``data`` with every password of the configs' store and transport URLs (as it stands
    in a URL, ``:PASSWORD@``) replaced by ``***``."""
    secrets = {
        password
        for config in configs
        for url in (config.store, config.transport)
        if url is not None and (password := urllib.parse.urlsplit(url).password)
    }
    if not secrets:
        return data
    text = msgspec.json.encode(data).decode()
    for secret in sorted(secrets, key=len, reverse=True):
        quoted = msgspec.json.encode(secret).decode()[1:-1]
        text = text.replace(f":{quoted}@", ":***@")
    masked: dict[str, Any] = msgspec.json.decode(text)
    return masked
