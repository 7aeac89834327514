"""The gateway's YAML configuration: parsing and deep validation into :class:`GatewayConfig`.

:func:`load_config` reads one or more files (a directory stands for every ``*.yaml`` /
``*.yml`` file in it, sorted by name) and returns an immutable :class:`GatewayConfig`, or
raises :class:`ConfigError` listing *every* problem found, each with its file, line and
column (1-based). Nothing half-valid is ever returned.

Keys (a contract: operators rely on them; new keys may be added, none renamed)::

    store: sqlite:///.tidings/events.db   # store URL (default shown)
    transport: nats://127.0.0.1:4222      # optional NATS URL, or kafka://host:9092
    drain_timeout: 10s                    # how long a stop waits for deliveries in flight
    http:
      listen: 127.0.0.1:8080              # host:port, port 0 = any free port
      max_body: 1MiB                      # B, KB, KiB, MB, MiB
      tokens: [{name, token_env, publish: [patterns], subscribe: [patterns]}]
      rate_limit: {rate: 1000, burst: 2000}   # per token, events/s
    schemas:                              # the schema registry (tidings.contracts)
      registry: true                      # serve its REST API at /registry (stored in the log)
      validate: true                      # refuse POSTed events breaking their topic's schema
      compatibility: BACKWARD             # default mode of subjects with none set
    routes:
      - name: NAME                        # unique
        from: PATTERN or [PATTERNS]
        when: CEL                         # optional; none = the default route of its from
        priority: 0                       # higher first
        redact: [data.field, ...]         # removed before targets see the event
        mask: false                       # true: replace redacted values with "***"
        dead_letter: TOPIC                # default tidings.gateway.dead_letter
        to: [TARGET, ...]
        split: {by: header NAME | key | random, variants: [{match|percent, to, name}]}

A target is ``{topic: NAME}``, ``{webhook: URL, mode: binary|structured, timeout: 2s,
retry: {max_attempts: 5, backoff: 100ms}}``, ``{nats: SUBJECT}`` (needs ``transport``),
``{mqtt: MQTT_TOPIC, url: mqtt://..., retry: ...}`` or ``{amqp: EXCHANGE, url: amqp://...,
routing_key: KEY, retry: ...}`` (see :mod:`tidings.bridges`).

Sources take events in from brokers (``tidings[mqtt]``, ``tidings[amqp]``), into the log
like a POST::

    sources:
      - {mqtt: mqtt://host:1883, subscribe: [sensors/#], wrap_type: sensors.raw,
         types: [PATTERNS], protocol: "5", client_id: NAME}
      - {amqp: amqp://user:pass@host:5672/, queues: [NAME], exchange: tidings,
         bind: [PATTERNS], dead_letter_exchange: NAME, wrap_type: ..., types: [...]}

Checks: unknown keys, wrong types, duplicate keys and route names, malformed topics and
patterns (:mod:`tidings.topics`), CEL that does not compile or names an unknown attribute
(:mod:`tidings.gateway.expressions`), unknown target kinds, ``nats`` targets without a
transport, split percentages that do not add up to 100, and redirect cycles between routes
(a route's topic target feeding, through other routes, back into its own ``from``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.composer import Composer
from yaml.resolver import Resolver

from tidings.exceptions import InvalidTopicError, TidingsError
from tidings.gateway.expressions import CelError, compile_condition
from tidings.topics import compile_pattern, validate_pattern, validate_topic

__all__ = (
    "DEFAULT_CONFIG",
    "DEFAULT_DEAD_LETTER",
    "ConfigError",
    "GatewayConfig",
    "HttpConfig",
    "Problem",
    "RateLimitConfig",
    "RouteConfig",
    "SchemasConfig",
    "SourceConfig",
    "SplitConfig",
    "TargetConfig",
    "TokenConfig",
    "VariantConfig",
    "load_config",
    "parse_config",
    "parse_listen",
)

DEFAULT_DEAD_LETTER = "tidings.gateway.dead_letter"
"""The topic a route's undeliverable events go to when it names no ``dead_letter``."""

DEFAULT_CONFIG = """\
# The embedded default: SQLite log, loopback HTTP, one route logging everything it sees.
store: sqlite:///.tidings/events.db
http:
  listen: 127.0.0.1:8080
  max_body: 1MiB
routes: []
"""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config, where it is (1-based line and column)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ConfigError(TidingsError, ValueError):
    """A gateway config is invalid; :attr:`problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"the gateway config has {len(self.problems)} problem(s); fix them and reload:\n{lines}"
        )


@dataclass(frozen=True)
class TargetConfig:
    """Where a route sends an event: ``kind`` is ``topic``, ``webhook``, ``nats``, ``mqtt``
    (``address`` the MQTT topic) or ``amqp`` (``address`` the exchange); the broker kinds
    name their broker's ``url`` and, for AMQP, an optional ``routing_key``."""

    kind: Literal["topic", "webhook", "nats", "mqtt", "amqp"]
    address: str
    mode: Literal["binary", "structured"] = "binary"
    timeout: float = 5.0
    max_attempts: int = 5
    backoff: float = 0.1
    url: str | None = None
    routing_key: str | None = None


@dataclass(frozen=True)
class SourceConfig:
    """A broker the gateway takes events from (``sources:``): ``kind`` ``mqtt`` (MQTT topic
    filters in ``subscribe``) or ``amqp`` (``queues``, bound to ``exchange`` with ``bind``
    patterns). The options not set here take the bridges' defaults."""

    kind: Literal["mqtt", "amqp"]
    url: str
    subscribe: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    exchange: str | None = None
    bind: tuple[str, ...] = ()
    dead_letter_exchange: str | None = None
    wrap_type: str | None = None
    types: tuple[str, ...] | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None


@dataclass(frozen=True)
class VariantConfig:
    """One split variant: chosen by ``match`` (a header value) or by ``percent``."""

    name: str
    to: tuple[TargetConfig, ...]
    match: str | None = None
    percent: float | None = None


@dataclass(frozen=True)
class SplitConfig:
    """A/B split: ``by`` is ``header`` (with ``header`` naming it), ``key`` or ``random``."""

    by: Literal["header", "key", "random"]
    variants: tuple[VariantConfig, ...]
    header: str | None = None


@dataclass(frozen=True)
class RouteConfig:
    """One route as configured (see the module docstring)."""

    name: str
    from_: tuple[str, ...]
    when: str | None = None
    priority: int = 0
    to: tuple[TargetConfig, ...] = ()
    split: SplitConfig | None = None
    redact: tuple[str, ...] = ()
    mask: bool = False
    dead_letter: str = DEFAULT_DEAD_LETTER
    file: str = "<config>"
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class TokenConfig:
    """An API token: its secret is read from the environment variable ``token_env``."""

    name: str
    token_env: str
    publish: tuple[str, ...] = (">",)
    subscribe: tuple[str, ...] = (">",)


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-token rate limit: ``rate`` events/s on average, bursts of ``burst``."""

    rate: float
    burst: int


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body: int = 1 << 20
    tokens: tuple[TokenConfig, ...] = ()
    rate_limit: RateLimitConfig | None = None


@dataclass(frozen=True)
class SchemasConfig:
    """The ``schemas:`` section: the registry's REST API, validation of POSTed events, and
    the default compatibility mode (see :mod:`tidings.contracts`)."""

    registry: bool = False
    validate: bool = False
    compatibility: str = "BACKWARD"


_MODES = (
    "NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
    "FULL_TRANSITIVE",
)  # fmt: skip


@dataclass(frozen=True)
class GatewayConfig:
    """A whole, valid gateway config. Immutable.

    ``sources`` are the files it was read from and ``text`` their contents, as loaded.
    """

    store: str = "sqlite:///.tidings/events.db"
    transport: str | None = None
    drain_timeout: float = 10.0
    http: HttpConfig = field(default_factory=HttpConfig)
    routes: tuple[RouteConfig, ...] = ()
    schemas: SchemasConfig = field(default_factory=SchemasConfig)
    sources: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    broker_sources: tuple[SourceConfig, ...] = ()
    """The ``sources:`` key (``sources`` above names the files read)."""


# -- scalars ----------------------------------------------------------------------------------

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*")
_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*")
_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0}


def parse_size(text: object) -> int:
    """``1MiB`` -> 1048576; a bare int is bytes. Raises ValueError."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    found = _SIZE.fullmatch(str(text))
    if found is None or float(found[1]) <= 0:
        raise ValueError(f"{text!r} is no size; write it as 1MiB, 512KB or a number of bytes")
    return int(float(found[1]) * _UNITS[found[2]])


def parse_duration(text: object) -> float:
    """``100ms`` -> 0.1, ``2s`` -> 2.0; a bare number is seconds. Raises ValueError."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text >= 0:
        return float(text)
    found = _DURATION.fullmatch(str(text))
    if found is None:
        raise ValueError(f"{text!r} is no duration; write it as 100ms, 2s or 1m")
    return float(found[1]) * _SECONDS[found[2]]


# -- the validator ----------------------------------------------------------------------------


class _Checker:
    """Walks composed YAML nodes, collecting every problem with its position."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def at(self, node: yaml.Node, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, message))

    def mapping(
        self, node: yaml.Node, what: str, allowed: Iterable[str]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.at(node, f"{what} must be a mapping (key: value)")
            return {}
        known = tuple(allowed)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is None:
                self.at(key, f"{what} has a key that is not a plain name")
            elif name in out:
                self.at(key, f"{what} has the key {name!r} twice")
            elif name not in known:
                self.at(key, f"unknown key {name!r} in {what}; known keys: {', '.join(known)}")
            else:
                out[name] = (key, value)
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.at(node, f"{what} must be a list")
            return []
        return list(node.value)

    def text(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            self.at(node, f"{what} must be a string")
            return None
        value: str = node.value
        if not value.strip():
            self.at(node, f"{what} must not be empty")
            return None
        return value

    def number(self, node: yaml.Node, what: str, *, integer: bool = False) -> float | None:
        raw = self.text(node, what)
        if raw is None:
            return None
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            self.at(node, f"{what} must be {'an integer' if integer else 'a number'}, not {raw!r}")
            return None
        return value

    def converted(self, node: yaml.Node, what: str, convert: Callable[[str], Any]) -> Any:
        raw = self.text(node, what)
        if raw is None:
            return None
        try:
            return convert(raw)
        except ValueError as exc:
            self.at(node, f"{what}: {exc}")
            return None

    def patterns(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        items = [node] if isinstance(node, yaml.ScalarNode) else self.sequence(node, what)
        out: list[str] = []
        for item in items:
            raw = self.text(item, what)
            if raw is None:
                continue
            try:
                out.append(validate_pattern(raw))
            except InvalidTopicError as exc:
                self.at(item, f"{what}: {exc}")
        return tuple(out)


_TOP = ("store", "transport", "http", "routes", "drain_timeout", "schemas", "sources")
_HTTP = ("listen", "max_body", "tokens", "rate_limit")
_TOKEN = ("name", "token_env", "publish", "subscribe")
_ROUTE = ("name", "from", "when", "priority", "to", "split", "redact", "mask", "dead_letter")
_WEBHOOK = ("webhook", "mode", "timeout", "retry")
_SPLIT = ("by", "variants")
_VARIANT = ("match", "percent", "to", "name")
_REDACT = re.compile(r"data(\.[A-Za-z_][A-Za-z0-9_-]*)+")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port (port 0-65535; 0 = any free port)")
    return host, int(port)


def _retry(
    check: _Checker, keys: dict[str, tuple[yaml.Node, yaml.Node]], what: str
) -> tuple[int, float]:
    """A target's ``retry: {max_attempts, backoff}``: (5, 0.1) unless given."""
    attempts, backoff = 5, 0.1
    if "retry" in keys:
        retry = check.mapping(keys["retry"][1], f"{what}.retry", ("max_attempts", "backoff"))
        if "max_attempts" in retry:
            count = check.number(retry["max_attempts"][1], "max_attempts", integer=True)
            if count is not None and count < 1:
                check.at(retry["max_attempts"][1], "max_attempts must be at least 1")
            attempts = max(1, int(count or 1))
        if "backoff" in retry:
            found = check.converted(retry["backoff"][1], "backoff", parse_duration)
            backoff = 0.1 if found is None else found
    return attempts, backoff


def _target(check: _Checker, node: yaml.Node, what: str) -> TargetConfig | None:
    if not isinstance(node, yaml.MappingNode) or not node.value:
        check.at(node, f"{what} must be a mapping such as {{topic: NAME}} or {{webhook: URL}}")
        return None
    first = node.value[0][0].value
    if first == "topic" or first == "nats":
        keys = check.mapping(node, what, (first,))
        if first not in keys:
            return None
        value = keys[first][1]
        name = check.text(value, f"{what}.{first}")
        if name is None:
            return None
        try:
            validate_topic(name)
        except InvalidTopicError as exc:
            check.at(value, f"{what}.{first}: {exc}")
            return None
        return TargetConfig(first, name)
    if first == "webhook":
        keys = check.mapping(node, what, _WEBHOOK)
        url = check.text(keys["webhook"][1], f"{what}.webhook")
        if url is not None and not url.startswith(("http://", "https://")):
            check.at(keys["webhook"][1], f"{what}.webhook must be an http:// or https:// URL")
            url = None
        mode = "binary"
        if "mode" in keys:
            mode = check.text(keys["mode"][1], f"{what}.mode") or "binary"
            if mode not in ("binary", "structured"):
                check.at(keys["mode"][1], f"{what}.mode is binary or structured, not {mode!r}")
                mode = "binary"
        timeout = 5.0
        if "timeout" in keys:
            timeout = check.converted(keys["timeout"][1], f"{what}.timeout", parse_duration) or 5.0
        attempts, backoff = _retry(check, keys, what)
        if url is None:
            return None
        return TargetConfig("webhook", url, mode, timeout, attempts, backoff)  # type: ignore[arg-type]
    if first in ("mqtt", "amqp"):
        return _broker_target(check, node, what, first)
    check.at(
        node.value[0][0],
        f"unknown target kind {first!r} in {what}; a target is {{topic: NAME}}, "
        "{webhook: URL, ...}, {nats: SUBJECT}, {mqtt: TOPIC, url: ...} or "
        "{amqp: EXCHANGE, url: ...}",
    )
    return None


# -- brokers (tidings.bridges): sources and targets of kind mqtt and amqp ----------------------

_SCHEMES = {"mqtt": ("mqtt://",), "amqp": ("amqp://", "amqps://")}
_EXTRAS = {"mqtt": "aiomqtt", "amqp": "aio_pika"}
_MQTT_SOURCE = ("mqtt", "subscribe", "wrap_type", "types", "protocol", "client_id")
_AMQP_SOURCE = ("amqp", "queues", "exchange", "bind", "dead_letter_exchange", "wrap_type", "types")


def _broker_url(check: _Checker, node: yaml.Node, what: str, kind: str) -> str | None:
    import importlib.util

    url = check.text(node, what)
    if url is not None and not url.startswith(_SCHEMES[kind]):
        check.at(node, f"{what} must be a URL starting {' or '.join(_SCHEMES[kind])}")
        return None
    if url is not None and importlib.util.find_spec(_EXTRAS[kind]) is None:
        check.at(node, f"{what}: {kind} needs the extra: pip install 'tidings[{kind}]'")
        return None
    return url


def _mqtt_names(check: _Checker, node: yaml.Node, what: str, *, filters: bool) -> list[str]:
    from tidings.bridges.names import from_mqtt_filter, from_mqtt_topic

    items = [node] if isinstance(node, yaml.ScalarNode) else check.sequence(node, what)
    out = []
    for item in items:
        name = check.text(item, what)
        if name is None:
            continue
        try:
            (from_mqtt_filter if filters else from_mqtt_topic)(name)
        except InvalidTopicError as exc:
            check.at(item, f"{what}: {exc}")
            continue
        out.append(name)
    return out


def _broker_target(check: _Checker, node: yaml.Node, what: str, kind: str) -> TargetConfig | None:
    keys = check.mapping(node, what, (kind, "url", "routing_key", "retry", "timeout"))
    address: str | None
    if kind == "mqtt":
        found = _mqtt_names(check, keys[kind][1], f"{what}.mqtt", filters=False)
        address = found[0] if found else None
    else:
        address = check.text(keys[kind][1], f"{what}.amqp")
    url = None
    if "url" in keys:
        url = _broker_url(check, keys["url"][1], f"{what}.url", kind)
    else:
        check.at(node, f"{what} needs 'url' (the {kind} broker)")
    routing_key = None
    if "routing_key" in keys:
        if kind == "mqtt":
            check.at(keys["routing_key"][0], f"{what}: routing_key is for amqp targets")
        routing_key = check.text(keys["routing_key"][1], f"{what}.routing_key")
    timeout = 5.0
    if "timeout" in keys:
        timeout = check.converted(keys["timeout"][1], f"{what}.timeout", parse_duration) or 5.0
    attempts, backoff = _retry(check, keys, what)
    if address is None or url is None:
        return None
    return TargetConfig(
        kind,  # type: ignore[arg-type]
        address,
        timeout=timeout,
        max_attempts=attempts,
        backoff=backoff,
        url=url,
        routing_key=routing_key,
    )


def _source(check: _Checker, node: yaml.Node, what: str) -> SourceConfig | None:
    if not isinstance(node, yaml.MappingNode) or not node.value:
        check.at(node, f"{what} must be a mapping such as {{mqtt: URL, subscribe: [...]}}")
        return None
    kind = node.value[0][0].value
    if kind not in ("mqtt", "amqp"):
        check.at(
            node.value[0][0],
            f"unknown source kind {kind!r} in {what}; a source is {{mqtt: URL, subscribe: "
            "[FILTERS]} or {amqp: URL, queues: [NAMES]}",
        )
        return None
    keys = check.mapping(node, what, _MQTT_SOURCE if kind == "mqtt" else _AMQP_SOURCE)
    url = _broker_url(check, keys[kind][1], f"{what}.{kind}", kind) if kind in keys else None
    options: dict[str, Any] = {}
    needed = "subscribe" if kind == "mqtt" else "queues"
    if needed not in keys:
        check.at(node, f"{what} needs '{needed}'")
    elif kind == "mqtt":
        options["subscribe"] = tuple(
            _mqtt_names(check, keys["subscribe"][1], f"{what}.subscribe", filters=True)
        )
    else:
        items = check.sequence(keys["queues"][1], f"{what}.queues")
        options["queues"] = tuple(
            q for q in (check.text(i, f"{what}.queues") for i in items) if q is not None
        )
    for name in ("bind", "types"):
        if name in keys:
            options[name] = check.patterns(keys[name][1], f"{what}.{name}")
    for name in ("exchange", "dead_letter_exchange", "wrap_type", "client_id"):
        if name in keys:
            options[name] = check.text(keys[name][1], f"{what}.{name}")
    if "protocol" in keys:
        protocol = check.text(keys["protocol"][1], f"{what}.protocol")
        if protocol not in ("5", "3.1.1"):
            check.at(keys["protocol"][1], f'{what}.protocol is "5" or "3.1.1"')
        else:
            options["protocol"] = protocol
    if url is None:
        return None
    return SourceConfig(kind, url, **options)


def _targets(check: _Checker, node: yaml.Node, what: str) -> tuple[TargetConfig, ...]:
    out = []
    for index, item in enumerate(check.sequence(node, what)):
        target = _target(check, item, f"{what}[{index}]")
        if target is not None:
            out.append(target)
    return tuple(out)


def _split(check: _Checker, node: yaml.Node, what: str) -> SplitConfig | None:
    keys = check.mapping(node, what, _SPLIT)
    if "by" not in keys or "variants" not in keys:
        check.at(node, f"{what} needs both 'by' and 'variants'")
        return None
    by_text = check.text(keys["by"][1], f"{what}.by") or ""
    by, _, header = by_text.partition(" ")
    if by not in ("header", "key", "random") or (by == "header") != bool(header.strip()):
        check.at(keys["by"][1], f"{what}.by is 'header NAME', 'key' or 'random', not {by_text!r}")
        return None
    variants: list[VariantConfig] = []
    total = 0.0
    percents = False
    for index, item in enumerate(check.sequence(keys["variants"][1], f"{what}.variants")):
        where = f"{what}.variants[{index}]"
        entry = check.mapping(item, where, _VARIANT)
        if "to" not in entry:
            check.at(item, f"{where} needs 'to'")
            continue
        match = check.text(entry["match"][1], f"{where}.match") if "match" in entry else None
        percent = None
        if "percent" in entry:
            percent = check.number(entry["percent"][1], f"{where}.percent")
            if percent is not None and not 0 <= percent <= 100:
                check.at(entry["percent"][1], f"{where}.percent must be within 0-100")
            percents = True
            total += percent or 0
        if (match is None) == (percent is None):
            check.at(item, f"{where} needs exactly one of 'match' and 'percent'")
            continue
        if match is not None and by != "header":
            check.at(entry["match"][1], f"{where}.match needs 'by: header NAME'")
        name = check.text(entry["name"][1], f"{where}.name") if "name" in entry else None
        label = name or (match if match is not None else f"{index}")
        variants.append(
            VariantConfig(label, _targets(check, entry["to"][1], f"{where}.to"), match, percent)
        )
    if percents and abs(total - 100) > 1e-9:
        check.at(keys["variants"][1], f"{what}: the percentages add up to {total:g}, not 100")
    return SplitConfig(by, tuple(variants), header.strip().lower() or None)  # type: ignore[arg-type]


def _route(check: _Checker, node: yaml.Node, index: int, transport: bool) -> RouteConfig | None:
    what = f"routes[{index}]"
    keys = check.mapping(node, what, _ROUTE)
    if not keys:
        return None
    name = check.text(keys["name"][1], f"{what}.name") if "name" in keys else None
    if "name" not in keys:
        check.at(node, f"{what} needs a 'name'")
    if name is not None:
        what = f"route {name!r}"
    from_: tuple[str, ...] = ()
    if "from" in keys:
        from_ = check.patterns(keys["from"][1], f"{what}.from")
    else:
        check.at(node, f"{what} needs 'from' (a topic pattern or a list of them)")
    when = None
    if "when" in keys:
        when = check.text(keys["when"][1], f"{what}.when")
        if when is not None:
            try:
                compile_condition(when)
            except CelError as exc:
                mark = keys["when"][1].start_mark
                check.problems.append(
                    Problem(check.file, mark.line + 1, mark.column + 1, f"{what}.when: {exc}")
                )
    priority = 0
    if "priority" in keys:
        priority = int(check.number(keys["priority"][1], f"{what}.priority", integer=True) or 0)
    to = _targets(check, keys["to"][1], f"{what}.to") if "to" in keys else ()
    split = _split(check, keys["split"][1], f"{what}.split") if "split" in keys else None
    if not to and split is None and "to" not in keys:
        check.at(node, f"{what} needs 'to' (a list of targets) or 'split'")
    redact: list[str] = []
    if "redact" in keys:
        for item in check.sequence(keys["redact"][1], f"{what}.redact"):
            path = check.text(item, f"{what}.redact")
            if path is not None and _REDACT.fullmatch(path) is None:
                check.at(item, f"{what}.redact: {path!r} is no data field path (data.a.b)")
            elif path is not None:
                redact.append(path)
    mask = False
    if "mask" in keys:
        mask = check.text(keys["mask"][1], f"{what}.mask") in ("true", "True", "yes")
    dead_letter = DEFAULT_DEAD_LETTER
    if "dead_letter" in keys:
        topic = check.text(keys["dead_letter"][1], f"{what}.dead_letter")
        try:
            dead_letter = validate_topic(topic or DEFAULT_DEAD_LETTER)
        except InvalidTopicError as exc:
            check.at(keys["dead_letter"][1], f"{what}.dead_letter: {exc}")
    if not transport:
        all_targets = list(to) + [t for v in (split.variants if split else ()) for t in v.to]
        if any(t.kind == "nats" for t in all_targets):
            check.at(node, f"{what} has a nats target, but the config sets no 'transport'")
    if name is None:
        return None
    return RouteConfig(
        name,
        from_,
        when,
        priority,
        to,
        split,
        tuple(redact),
        mask,
        dead_letter,
        check.file,
        node.start_mark.line + 1,
        node.start_mark.column + 1,
    )


def _file_config(check: _Checker, root: yaml.Node | None) -> dict[str, Any]:
    """The top-level values of one file, checked; routes as RouteConfig."""
    out: dict[str, Any] = {}
    if root is None:
        return out
    keys = check.mapping(root, "the config", _TOP)
    if "store" in keys:
        out["store"] = check.text(keys["store"][1], "store")
    if "transport" in keys:
        out["transport"] = check.text(keys["transport"][1], "transport")
    if "drain_timeout" in keys:
        out["drain_timeout"] = check.converted(
            keys["drain_timeout"][1], "drain_timeout", parse_duration
        )
    if "http" in keys:
        out["http"] = _http(check, keys["http"][1])
    if "schemas" in keys:
        out["schemas"] = _schemas(check, keys["schemas"][1])
    if "sources" in keys:
        out["broker_sources"] = [
            s
            for i, item in enumerate(check.sequence(keys["sources"][1], "sources"))
            if (s := _source(check, item, f"sources[{i}]")) is not None
        ]
    if "routes" in keys:
        has_transport = "transport" in keys
        out["routes"] = [
            r
            for i, item in enumerate(check.sequence(keys["routes"][1], "routes"))
            if (r := _route(check, item, i, has_transport)) is not None
        ]
    out["_keys"] = {k: v[0] for k, v in keys.items()}
    return out


def _schemas(check: _Checker, node: yaml.Node) -> SchemasConfig:
    keys = check.mapping(node, "schemas", ("registry", "validate", "compatibility"))
    flags = {}
    for name in ("registry", "validate"):
        if name in keys:
            raw = (check.text(keys[name][1], f"schemas.{name}") or "").lower()
            if raw not in ("true", "false"):
                check.at(keys[name][1], f"schemas.{name} must be true or false")
            flags[name] = raw == "true"
    mode = SchemasConfig.compatibility
    if "compatibility" in keys:
        mode = (check.text(keys["compatibility"][1], "schemas.compatibility") or mode).upper()
        if mode not in _MODES:
            check.at(
                keys["compatibility"][1],
                f"schemas.compatibility {mode!r} is none of {', '.join(_MODES)}",
            )
    return SchemasConfig(flags.get("registry", False), flags.get("validate", False), mode)


def _http(check: _Checker, node: yaml.Node) -> HttpConfig:
    keys = check.mapping(node, "http", _HTTP)
    host, port = "127.0.0.1", 8080
    if "listen" in keys:
        found = check.converted(keys["listen"][1], "http.listen", parse_listen)
        if found is not None:
            host, port = found
    max_body = 1 << 20
    if "max_body" in keys:
        max_body = check.converted(keys["max_body"][1], "http.max_body", parse_size) or max_body
    tokens: list[TokenConfig] = []
    if "tokens" in keys:
        for i, item in enumerate(check.sequence(keys["tokens"][1], "http.tokens")):
            what = f"http.tokens[{i}]"
            entry = check.mapping(item, what, _TOKEN)
            name = check.text(entry["name"][1], f"{what}.name") if "name" in entry else None
            env = (
                check.text(entry["token_env"][1], f"{what}.token_env")
                if "token_env" in entry
                else None
            )
            if "name" not in entry or "token_env" not in entry:
                check.at(item, f"{what} needs 'name' and 'token_env' (an environment variable)")
            publish = (
                check.patterns(entry["publish"][1], f"{what}.publish")
                if "publish" in entry
                else (">",)
            )
            subscribe = (
                check.patterns(entry["subscribe"][1], f"{what}.subscribe")
                if "subscribe" in entry
                else (">",)
            )
            if name and env:
                tokens.append(TokenConfig(name, env, publish, subscribe))
    rate_limit = None
    if "rate_limit" in keys:
        entry = check.mapping(keys["rate_limit"][1], "http.rate_limit", ("rate", "burst"))
        rate = check.number(entry["rate"][1], "http.rate_limit.rate") if "rate" in entry else None
        burst = (
            check.number(entry["burst"][1], "http.rate_limit.burst", integer=True)
            if "burst" in entry
            else None
        )
        if rate is None or rate <= 0:
            check.at(keys["rate_limit"][1], "http.rate_limit needs a positive 'rate' (events/s)")
        else:
            rate_limit = RateLimitConfig(rate, int(burst) if burst and burst > 0 else int(rate))
    return HttpConfig(host, port, max_body, tuple(tokens), rate_limit)


def _cycles(routes: Sequence[RouteConfig]) -> list[tuple[RouteConfig, str]]:
    """Routes whose topic targets lead, through routes, back into their own ``from``."""
    outputs: dict[str, set[str]] = {}
    for route in routes:
        targets = list(route.to) + [
            t for v in (route.split.variants if route.split else ()) for t in v.to
        ]
        outputs[route.name] = {t.address for t in targets if t.kind == "topic"}
    # patterns indexed by their first token ('*' for a leading wildcard), so that each
    # output topic is matched against the few patterns that can take it
    takers_of: dict[str, set[str]] = {}
    by_first: dict[str, set[str]] = {}
    for route in routes:
        for pattern in route.from_:
            takers_of.setdefault(pattern, set()).add(route.name)
            first = pattern.split(".", 1)[0]
            by_first.setdefault("*" if first in ("*", ">") else first, set()).add(pattern)
    taken: dict[str, set[str]] = {}

    def takers(topic: str) -> set[str]:
        found = taken.get(topic)
        if found is None:
            first = topic.split(".", 1)[0]
            found = taken[topic] = {
                name
                for pattern in by_first.get(first, set()) | by_first.get("*", set())
                if compile_pattern(pattern)(topic)
                for name in takers_of[pattern]
            }
        return found

    feeds = {route.name: set().union(*(takers(t) for t in outputs[route.name])) for route in routes}
    found = []
    for route in routes:
        seen: set[str] = set()
        stack = list(feeds[route.name])
        while stack:
            name = stack.pop()
            if name == route.name:
                path = ", ".join(sorted(outputs[route.name]))
                found.append(
                    (
                        route,
                        (
                            f"route {route.name!r} has a redirect cycle: its topic "
                            f"target(s) {path} lead back into its own 'from'"
                        ),
                    )
                )
                break
            if name not in seen:
                seen.add(name)
                stack.extend(feeds[name])
    return found


def parse_config(sources: Sequence[tuple[str, str]]) -> GatewayConfig:
    """Validate ``(file name, YAML text)`` pairs into one :class:`GatewayConfig`.

    Routes of every file are concatenated; ``store``, ``transport``, ``http`` and
    ``drain_timeout`` may each be set in one file only.

    Raises:
        ConfigError: listing every problem, with file, line and column.
    """
    problems: list[Problem] = []
    merged: dict[str, Any] = {}
    owner: dict[str, str] = {}
    routes: list[RouteConfig] = []
    broker_sources: list[SourceConfig] = []
    for file, text in sources:
        check = _Checker(file)
        try:
            root = _compose(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            problems.append(Problem(file, line, column, f"not valid YAML: {exc.problem}"))
            continue
        if root is None:
            problems.append(
                Problem(
                    file,
                    1,
                    1,
                    "the file holds no config (empty, or only comments); if an editor or a "
                    "deployment is still writing it, write a temporary file and rename it "
                    "over this one so that readers see it whole",
                )
            )
            continue
        values = _file_config(check, root)
        for key, node in values.pop("_keys", {}).items():
            if key in ("routes", "sources"):
                continue
            if key in owner:
                check.at(node, f"{key!r} is already set in {owner[key]}; set it in one file")
            owner[key] = file
        routes.extend(values.pop("routes", []))
        broker_sources.extend(values.pop("broker_sources", []))
        merged.update({k: v for k, v in values.items() if v is not None})
        problems.extend(check.problems)
    names: dict[str, RouteConfig] = {}
    for route in routes:
        if route.name in names:
            first = names[route.name]
            problems.append(
                Problem(
                    route.file,
                    route.line,
                    route.column,
                    f"duplicate route name {route.name!r} "
                    f"(first defined at {first.file}:{first.line}); names must be unique",
                )
            )
        names[route.name] = route
    for route, message in _cycles(routes):
        problems.append(Problem(route.file, route.line, route.column, message))
    if problems:
        raise ConfigError(problems)
    return GatewayConfig(
        store=merged.get("store", GatewayConfig.store),
        transport=merged.get("transport"),
        drain_timeout=merged.get("drain_timeout", GatewayConfig.drain_timeout),
        http=merged.get("http", HttpConfig()),
        routes=tuple(routes),
        schemas=merged.get("schemas", SchemasConfig()),
        sources=tuple(f for f, _ in sources),
        text=tuple(t for _, t in sources),
        broker_sources=tuple(broker_sources),
    )


def _compose(text: str) -> yaml.Node | None:
    """The YAML node tree of ``text``, with positions: libyaml's parser (fast) under
    PyYAML's Python composer, which lets other threads run between parser events (libyaml's
    own composer holds the GIL for a whole document: a 500-route reload stalled the event
    loop 40-90 ms with it)."""
    loader = _Loader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


try:
    from yaml._yaml import CParser

    class _Loader(Composer, Resolver, CParser):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            Resolver.__init__(self)

except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader  # type: ignore[misc,assignment]


def config_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files ``paths`` stand for: files as given, directories as their YAML files."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            out.append(path)
    return out


def load_config(paths: Sequence[str | os.PathLike[str]] = ()) -> GatewayConfig:
    """Read and validate the config in ``paths`` (files or directories); none = the default.

    Raises:
        ConfigError: listing every problem (an unreadable file is one).
    """
    if not paths:
        return parse_config([("<default>", DEFAULT_CONFIG)])
    sources: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for path in config_files(paths):
        try:
            sources.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 1, 1, f"cannot read the file: {exc}"))
    if problems:
        raise ConfigError(problems)
    return parse_config(sources)
