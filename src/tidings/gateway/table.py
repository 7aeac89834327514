"""The compiled, immutable route table: which targets an event goes to, and in what form.

:meth:`RouteTable.route` maps one envelope to its :class:`Dispatch` list:

- a route is a *candidate* when one of its ``from`` patterns matches the event's topic.
  Topics under ``tidings.`` (the gateway's own events) are matched only by patterns that
  name ``tidings`` as their first token, so a catch-all ``>`` never feeds on them;
- every candidate with a ``when`` condition that evaluates to ``true`` fires, in priority
  order (higher first, then config order); a condition that fails on the event (a missing
  field) does not match and is counted in :attr:`RouteTable.condition_errors`;
- candidates without ``when`` are *default* routes: they fire only when no conditional
  candidate did;
- a route with ``split`` picks one variant (:func:`choose_variant`) and records its name in
  the event's ``splitvariant`` header; its own ``to`` targets get the event as well;
- ``redact`` removes (or, with ``mask``, masks) the listed ``data`` fields of the copy the
  targets see; the envelope passed in, as stored in the log, is never changed.

A table is built once per config (:meth:`RouteTable.build`: every CEL condition compiled
once) and never changes afterwards; the runner swaps whole tables, so an event routed by a
table is routed by that table entirely.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.event import Envelope
from tidings.gateway.config import GatewayConfig, RouteConfig, SplitConfig, TargetConfig
from tidings.gateway.expressions import Condition, compile_condition, data_variable
from tidings.topics import compile_pattern

__all__ = ("VARIANT_HEADER", "Dispatch", "RouteTable", "choose_variant", "matches", "redact")

VARIANT_HEADER = "splitvariant"
"""The header naming the split variant an event was sent to."""

_CACHE_LIMIT = 4096


class Dispatch(msgspec.Struct, frozen=True):
    """One route's decision for one event: send ``envelope`` to ``targets``.

    ``topics_only``: every target is known to be a ``topic`` (the runner publishes those of
    many events together); ``False`` when not known."""

    route: str
    targets: tuple[TargetConfig, ...]
    envelope: Envelope[Any]
    dead_letter: str
    variant: str | None = None
    topics_only: bool = False


@dataclass(frozen=True)
class _Route:
    config: RouteConfig
    matchers: tuple[Any, ...]
    system: bool
    condition: Condition | None
    context: Context | None
    topics_only: bool  # every target of ``to`` is a topic

    def takes(self, topic: str) -> bool:
        if topic.startswith("tidings.") and not self.system:
            return False
        return any(match(topic) for match in self.matchers)


def _topics_only(targets: tuple[TargetConfig, ...]) -> bool:
    return all(target.kind == "topic" for target in targets)


def _stable_fraction(route: str, value: str) -> float:
    digest = hashlib.blake2b(f"{route}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def choose_variant(
    route: str, split: SplitConfig, envelope: Envelope[Any]
) -> tuple[str, tuple[TargetConfig, ...]] | None:
    """The variant ``split`` sends ``envelope`` to: ``(name, targets)``, or ``None``.

    ``match`` variants are tried first against the header; otherwise a percentage is drawn,
    from a stable hash (blake2b) of the route name and the header value or key, so the same
    value always lands on the same variant (sticky), or at random for ``by: random``.
    """
    value: str | None
    if split.by == "header":
        name = split.header or ""
        headers = envelope.headers
        value = headers.get(name)
        if value is None:
            value = headers.get(name.replace("-", ""))
        if value is not None:
            for variant in split.variants:
                if variant.match is not None and variant.match == value:
                    return variant.name, variant.to
    elif split.by == "key":
        value = envelope.key if envelope.key is not None else envelope.id
    else:
        value = None
    point = random.random() if value is None else _stable_fraction(route, value)
    point *= 100
    cumulative = 0.0
    for variant in split.variants:
        if variant.percent is None:
            continue
        cumulative += variant.percent
        if point < cumulative:
            return variant.name, variant.to
    return None


def redact(data: Any, paths: tuple[tuple[str, ...], ...], mask: bool) -> Any:
    """A copy of ``data`` with the fields at ``paths`` removed, or set to ``"***"``."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for path in paths:
        node: Any = out
        for part in path[:-1]:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                node = None
                break
            node[part] = child = dict(child)
            node = child
        if isinstance(node, dict) and path[-1] in node:
            if mask:
                node[path[-1]] = "***"
            else:
                del node[path[-1]]
    return out


def _time(envelope: Envelope[Any]) -> str:
    return envelope.datetime.isoformat().replace("+00:00", "Z")


_ATTRIBUTE: dict[str, Callable[[Envelope[Any]], Any]] = {
    "id": lambda e: e.id,
    "type": lambda e: e.topic,
    "source": lambda e: e.source,
    "subject": lambda e: e.headers.get("subject", ""),
    "time": _time,
    "specversion": lambda e: "1.0",
    "datacontenttype": lambda e: e.headers.get("datacontenttype", "application/json"),
    "dataschema": lambda e: e.headers.get("dataschema", ""),
    "data": lambda e: e.payload,
    "extensions": lambda e: dict(e.headers),
}
"""How each CEL variable is read off an envelope (see :mod:`tidings.gateway.expressions`)."""


Context = Callable[[Envelope[Any]], dict[str, Any]]
"""Builds a condition's variables from an envelope."""


def _context_of(condition: Condition) -> Context:
    """The variables ``condition`` reads, and only those (see
    :mod:`tidings.gateway.expressions`: a flattened condition gets the ``data`` fields the
    payload has, each as a variable of its own)."""
    fields = condition.data_fields
    reads = tuple(
        (name, _ATTRIBUTE[name]) for name in condition.names if fields is None or name != "data"
    )
    if fields is None:
        return lambda envelope: {name: read(envelope) for name, read in reads}
    variables = tuple((field, data_variable(field)) for field in fields)

    def context(envelope: Envelope[Any]) -> dict[str, Any]:
        out = {name: read(envelope) for name, read in reads}
        payload = envelope.payload
        if type(payload) is dict:  # anything else has no fields: each read fails, as before
            for field, variable in variables:
                if field in payload:
                    out[variable] = payload[field]
        return out

    return context


def matches(condition: Condition, envelope: Envelope[Any]) -> bool | None:
    """Whether ``envelope`` satisfies ``condition`` as a route's ``when`` would judge it;
    ``None`` when the evaluation failed on it."""
    return condition.evaluate(_context_of(condition)(envelope))


class RouteTable:
    """An immutable, compiled route table (see the module docstring).

    Attributes:
        config: the config it was built from.
        generation: 1 for the first table a runner loads, then one more per accepted reload.
        loaded_at: when it was built (UTC).
        condition_errors: conditions that failed on an event (counted, never raised).
    """

    def __init__(self, config: GatewayConfig, routes: tuple[_Route, ...], generation: int) -> None:
        self.config = config
        self.generation = generation
        self.loaded_at = _dt.datetime.now(_dt.UTC)
        self._routes = routes
        self._candidates: dict[str, tuple[_Route, ...]] = {}
        self.condition_errors = 0

    @classmethod
    def build(cls, config: GatewayConfig, generation: int = 1) -> RouteTable:
        """Compile ``config``'s routes (each CEL condition once)."""
        compiled = []
        for order, route in sorted(enumerate(config.routes), key=lambda p: (-p[1].priority, p[0])):
            del order
            condition = None if route.when is None else compile_condition(route.when)
            compiled.append(
                _Route(
                    route,
                    tuple(compile_pattern(p) for p in route.from_),
                    any(p.split(".", 1)[0] == "tidings" for p in route.from_),
                    condition,
                    None if condition is None else _context_of(condition),
                    _topics_only(route.to),
                )
            )
        return cls(config, tuple(compiled), generation)

    def _for_topic(self, topic: str) -> tuple[_Route, ...]:
        found = self._candidates.get(topic)
        if found is None:
            found = tuple(r for r in self._routes if r.takes(topic))
            if len(self._candidates) >= _CACHE_LIMIT:
                self._candidates.clear()
            self._candidates[topic] = found
        return found

    def route(self, envelope: Envelope[Any]) -> list[Dispatch]:
        """Every :class:`Dispatch` the table makes of ``envelope`` (empty: no route)."""
        candidates = self._for_topic(envelope.topic)
        if not candidates:
            return []
        fired: list[_Route] = []
        defaults: list[_Route] = []
        for route in candidates:
            condition, context = route.condition, route.context
            if condition is None or context is None:
                defaults.append(route)
                continue
            verdict = condition.evaluate(context(envelope))
            if verdict is None:
                self.condition_errors += 1
            elif verdict:
                fired.append(route)
        return [self._dispatch(r, envelope) for r in (fired or defaults)]

    def _dispatch(self, route: _Route, envelope: Envelope[Any]) -> Dispatch:
        config = route.config
        targets = config.to
        topics_only = route.topics_only
        out = envelope
        variant = None
        if config.split is not None:
            chosen = choose_variant(config.name, config.split, envelope)
            if chosen is not None:
                name, extra = chosen
                variant = name
                targets = targets + extra
                topics_only = topics_only and _topics_only(extra)
                headers: Mapping[str, str] = {**envelope.headers, VARIANT_HEADER: name}
                out = msgspec.structs.replace(out, headers=headers)
        if config.redact:
            paths = tuple(tuple(p.split(".")[1:]) for p in config.redact)
            out = msgspec.structs.replace(out, payload=redact(out.payload, paths, config.mask))
        return Dispatch(config.name, targets, out, config.dead_letter, variant, topics_only)

    def find(self, name: str) -> RouteConfig | None:
        """The route named ``name`` in this table, if there is one."""
        return next((r.config for r in self._routes if r.config.name == name), None)

    def describe(self) -> dict[str, Any]:
        """The table as plain data (for ``GET /config``)."""
        return {
            "generation": self.generation,
            "loaded_at": self.loaded_at.isoformat().replace("+00:00", "Z"),
            "sources": list(self.config.sources),
            "config": msgspec.to_builtins(self.config),
        }
