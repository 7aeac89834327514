"""Scenario files: the topology, the workload and the fault timeline of one chaos run.

A scenario is YAML (see ``docs/chaos.md`` and the shipped ones in
``tidings/chaos/scenarios/``)::

    name: one-way-partition
    mode: at_least_once            # the checker's promise: at_most_once, at_least_once,
                                   # effectively_once
    broker: {nodes: 1}             # nats-server processes: 1, or 3 (a cluster)
    workload:
      rate: 200                    # events per second, over all publishers
      keys: 8                      # ordering keys
      duration: 6s
      publishers: 1                # publisher processes
      via_proxy: true              # publishers reach the broker through the fault proxy
      forward: true                # store and forward (a SQLite log per publisher)
      gateway: false               # publish over HTTP through `tidings serve` instead
    consumers:
      - {name: ledger, processes: 2, ledger: true, exclusive: true}
    webhook: {delay: 200ms}        # with workload.gateway: a slow webhook target
    faults:
      - {at: 1s, for: 2s, kind: partition, direction: upstream}
      - {at: 2s, for: 1s, kind: stop, target: "consumer:ledger:active"}
    settle: 30s                    # the longest wait for convergence after the workload
    proxy: {port: 0}               # the fault proxy's port (0: any free one; with a
                                   # cluster, the first node's proxy: one per node)

:func:`load_scenario` checks everything it can before anything runs and raises
:class:`~tidings.chaos.ScenarioError` listing each problem with its file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tidings.chaos scenarios need {exc.name}: install it with pip install 'tidings[chaos]'"
    ) from exc

from tidings.chaos.checker import MODES, Mode
from tidings.chaos.errors import ScenarioError

__all__ = (
    "ConsumerSpec",
    "FaultSpec",
    "Scenario",
    "WorkloadSpec",
    "load_scenario",
    "parse_duration",
)

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}

PROXY_FAULTS = (
    "partition",
    "stall",
    "latency",
    "bandwidth",
    "reset",
    "timeout",
    "limit_data",
    "slow_close",
)
PROCESS_FAULTS = ("kill", "stop")
FAULT_KINDS = (*PROXY_FAULTS, *PROCESS_FAULTS, "cpu")
HANDLER_FAULTS = ("latency", "error_rate", "drop", "duplicate")


def parse_duration(text: str) -> float:
    """``500ms`` -> 0.5, ``2s`` -> 2.0, ``1m`` -> 60.0; a bare number is seconds."""
    found = _DURATION.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is no duration; write it as 500ms, 2s or 1m")
    return float(found[1]) * _UNITS[found[2]]


@dataclass(frozen=True)
class WorkloadSpec:
    rate: float = 100.0
    keys: int = 8
    duration: float = 5.0
    publishers: int = 1
    via_proxy: bool = True
    forward: bool = False
    gateway: bool = False


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    processes: int = 1
    ledger: bool = False
    exclusive: bool = True
    handler_faults: tuple[tuple[str, float], ...] = ()
    """``(kind, value)``: latency seconds, or a rate for error_rate, drop, duplicate."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    at: float
    duration: float | None
    target: str
    line: int
    direction: str = "both"
    latency: float = 0.0
    jitter: float = 0.0
    bytes_per_second: float = 0.0
    cores: int = 1
    timeout: float = 0.0
    """``timeout``: seconds until each connection is closed (0: never)."""
    limit: int = 0
    """``limit_data``: bytes each connection may pass before it is closed."""
    delay: float = 0.0
    """``slow_close``: seconds each close is delayed."""

    @property
    def end(self) -> float:
        return self.at + (self.duration or 0.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    file: str
    mode: Mode = "at_least_once"
    nodes: int = 1
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    consumers: tuple[ConsumerSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    webhook_delay: float | None = None
    settle: float = 30.0
    proxy_port: int = 0

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with its workload and fault timeline stretched by ``factor``
        (``make chaos`` runs the shipped scenarios longer)."""
        from dataclasses import replace

        workload = replace(self.workload, duration=self.workload.duration * factor)
        faults = tuple(
            replace(
                f,
                at=f.at * factor,
                duration=None if f.duration is None else f.duration * factor,
            )
            for f in self.faults
        )
        return replace(self, workload=workload, faults=faults)


class _Walker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[tuple[str, int, str]] = []

    def at(self, node: yaml.Node, message: str) -> None:
        self.problems.append((self.file, node.start_mark.line + 1, message))

    def mapping(self, node: yaml.Node, what: str, known: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.at(node, f"{what} must be a mapping (key: value)")
            return {}
        out: dict[str, yaml.Node] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name not in known:
                self.at(key, f"unknown key {name!r} in {what}; known keys: {', '.join(known)}")
            elif name in out:
                self.at(key, f"{what} has the key {name!r} twice")
            else:
                out[name] = value
        return out

    def scalar(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
            self.at(node, f"{what} must be a single value")
            return None
        return str(node.value)

    def convert(self, node: yaml.Node | None, what: str, convert: Any, default: Any) -> Any:
        if node is None:
            return default
        raw = self.scalar(node, what)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            self.at(node, f"{what}: {exc}")
            return default


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"must be a whole number, not {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, not {text!r}") from None


def _within(convert: Any, accepts: Any, wanted: str) -> Any:
    """A converter: ``convert(text)``, refused unless ``accepts`` it (must be ``wanted``)."""

    def checked(text: str) -> Any:
        value = convert(text)
        if not accepts(value):
            raise ValueError(f"must be {wanted}, not {text}")
        return value

    return checked


_positive_int = _within(_int, lambda v: v >= 1, "at least 1")
_non_negative_int = _within(_int, lambda v: v >= 0, "0 or more")
_port = _within(_int, lambda v: 0 <= v <= 65535, "a TCP port (0: any free one)")
_positive = _within(_float, lambda v: v > 0, "positive")
_fraction = _within(_float, lambda v: 0 <= v <= 1, "a fraction between 0 and 1")
_nodes = _within(_int, lambda v: v in (1, 3), "1 or 3")


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, not {text!r}")


def _mode(text: str) -> Mode:
    if text not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}, not {text!r}")
    return text


def _choice(*choices: str) -> Any:
    def convert(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {text!r}")
        return text

    return convert


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and check a scenario file.

    Raises:
        ScenarioError: the file is missing, not YAML, or wrong; every problem with its
            file and line.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(
            [(file, 0, f"cannot read the scenario: {exc.strerror or exc}")]
        ) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise ScenarioError([(file, line, f"not valid YAML: {exc.problem}")]) from exc
    w = _Walker(file)
    if root is None:
        raise ScenarioError([(file, 1, "the scenario is empty")])
    top = w.mapping(
        root,
        "the scenario",
        (
            "name",
            "mode",
            "broker",
            "workload",
            "consumers",
            "webhook",
            "faults",
            "settle",
            "proxy",
        ),
    )
    name = w.convert(top.get("name"), "name", str, Path(file).stem)
    mode = w.convert(top.get("mode"), "mode", _mode, "at_least_once")
    nodes = 1
    if "broker" in top:
        broker = w.mapping(top["broker"], "broker", ("nodes",))
        nodes = w.convert(broker.get("nodes"), "broker.nodes", _nodes, 1)
    workload = WorkloadSpec()
    if "workload" in top:
        wl = w.mapping(
            top["workload"],
            "workload",
            ("rate", "keys", "duration", "publishers", "via_proxy", "forward", "gateway"),
        )
        workload = WorkloadSpec(
            rate=w.convert(wl.get("rate"), "workload.rate", _positive, 100.0),
            keys=w.convert(wl.get("keys"), "workload.keys", _positive_int, 8),
            duration=w.convert(wl.get("duration"), "workload.duration", parse_duration, 5.0),
            publishers=w.convert(wl.get("publishers"), "workload.publishers", _positive_int, 1),
            via_proxy=w.convert(wl.get("via_proxy"), "workload.via_proxy", _boolean, True),
            forward=w.convert(wl.get("forward"), "workload.forward", _boolean, False),
            gateway=w.convert(wl.get("gateway"), "workload.gateway", _boolean, False),
        )
    consumers: list[ConsumerSpec] = []
    if "consumers" in top:
        node = top["consumers"]
        items = node.value if isinstance(node, yaml.SequenceNode) else []
        if not isinstance(node, yaml.SequenceNode):
            w.at(node, "consumers must be a list")
        for i, item in enumerate(items):
            what = f"consumers[{i}]"
            c = w.mapping(item, what, ("name", "processes", "ledger", "exclusive", "faults"))
            if "name" not in c:
                w.at(item, f"{what} needs a name")
            handler_faults: list[tuple[str, float]] = []
            if "faults" in c:
                fnode = c["faults"]
                fitems = fnode.value if isinstance(fnode, yaml.SequenceNode) else []
                if not isinstance(fnode, yaml.SequenceNode):
                    w.at(fnode, f"{what}.faults must be a list")
                for j, fitem in enumerate(fitems):
                    fwhat = f"{what}.faults[{j}]"
                    f = w.mapping(fitem, fwhat, ("kind", "value"))
                    kind = w.convert(f.get("kind"), f"{fwhat}.kind", _choice(*HANDLER_FAULTS), None)
                    if kind is None and "kind" not in f:
                        w.at(fitem, f"{fwhat} needs a kind ({', '.join(HANDLER_FAULTS)})")
                    convert = parse_duration if kind == "latency" else _fraction
                    value = w.convert(f.get("value"), f"{fwhat}.value", convert, 0.0)
                    if kind is not None:
                        handler_faults.append((kind, value))
            consumers.append(
                ConsumerSpec(
                    name=w.convert(c.get("name"), f"{what}.name", str, f"consumer{i}"),
                    processes=w.convert(c.get("processes"), f"{what}.processes", _positive_int, 1),
                    ledger=w.convert(c.get("ledger"), f"{what}.ledger", _boolean, False),
                    exclusive=w.convert(c.get("exclusive"), f"{what}.exclusive", _boolean, True),
                    handler_faults=tuple(handler_faults),
                )
            )
    webhook_delay = None
    if "webhook" in top:
        wh = w.mapping(top["webhook"], "webhook", ("delay",))
        webhook_delay = w.convert(wh.get("delay"), "webhook.delay", parse_duration, 0.0)
    if workload.gateway and webhook_delay is None:
        w.at(top.get("workload", root), "workload.gateway needs a webhook: {delay: ...} target")
    faults: list[FaultSpec] = []
    if "faults" in top:
        node = top["faults"]
        items = node.value if isinstance(node, yaml.SequenceNode) else []
        if not isinstance(node, yaml.SequenceNode):
            w.at(node, "faults must be a list")
        for i, item in enumerate(items):
            faults.extend(_fault(w, item, f"faults[{i}]", nodes, consumers, workload))
    settle = w.convert(top.get("settle"), "settle", parse_duration, 30.0)
    proxy_port = 0
    if "proxy" in top:
        proxy = w.mapping(top["proxy"], "proxy", ("port",))
        proxy_port = w.convert(proxy.get("port"), "proxy.port", _port, 0)
    if w.problems:
        raise ScenarioError(w.problems)
    return Scenario(
        name=name,
        file=file,
        mode=mode,
        nodes=nodes,
        workload=workload,
        consumers=tuple(consumers),
        faults=tuple(faults),
        webhook_delay=webhook_delay,
        settle=settle,
        proxy_port=proxy_port,
    )


def _fault(
    w: _Walker,
    node: yaml.Node,
    what: str,
    nodes: int,
    consumers: list[ConsumerSpec],
    workload: WorkloadSpec,
) -> list[FaultSpec]:
    f = w.mapping(
        node,
        what,
        (
            "at",
            "for",
            "kind",
            "target",
            "direction",
            "latency",
            "jitter",
            "bandwidth",
            "cores",
            "timeout",
            "bytes",
            "delay",
        ),
    )
    line = node.start_mark.line + 1
    before = len(w.problems)
    kind = w.convert(f.get("kind"), f"{what}.kind", _choice(*FAULT_KINDS), None)
    if "kind" not in f:
        w.at(node, f"{what} needs a kind ({', '.join(FAULT_KINDS)})")
    at = w.convert(f.get("at"), f"{what}.at", parse_duration, 0.0)
    duration = w.convert(f.get("for"), f"{what}.for", parse_duration, None)
    default_target = "proxy" if kind in PROXY_FAULTS else "machine" if kind == "cpu" else ""
    target = w.convert(f.get("target"), f"{what}.target", str, default_target)
    spec = FaultSpec(
        kind=kind or "",
        at=at,
        duration=duration,
        target=target,
        line=line,
        direction=w.convert(
            f.get("direction"),
            f"{what}.direction",
            _choice("both", "upstream", "downstream"),
            "both",
        ),
        latency=w.convert(f.get("latency"), f"{what}.latency", parse_duration, 0.0),
        jitter=w.convert(f.get("jitter"), f"{what}.jitter", parse_duration, 0.0),
        bytes_per_second=w.convert(f.get("bandwidth"), f"{what}.bandwidth", _positive, 0.0),
        cores=w.convert(f.get("cores"), f"{what}.cores", _positive_int, 1),
        timeout=w.convert(f.get("timeout"), f"{what}.timeout", parse_duration, 0.0),
        limit=w.convert(f.get("bytes"), f"{what}.bytes", _non_negative_int, 0),
        delay=w.convert(f.get("delay"), f"{what}.delay", parse_duration, 0.0),
    )
    if len(w.problems) > before or kind is None:
        return []
    if kind in PROXY_FAULTS:
        if target != "proxy":
            w.at(node, f"{what}: a {kind} fault applies to the proxy (target: proxy)")
        elif not workload.via_proxy:
            w.at(node, f"{what}: a {kind} fault needs workload.via_proxy: true")
        if kind == "latency" and not spec.latency:
            w.at(node, f"{what}: a latency fault needs latency: (e.g. 100ms)")
        if kind == "bandwidth" and not spec.bytes_per_second:
            w.at(node, f"{what}: a bandwidth fault needs bandwidth: (bytes per second)")
        if kind == "limit_data" and "bytes" not in f:
            w.at(node, f"{what}: a limit_data fault needs bytes: (how many pass, e.g. 4096)")
        if kind == "slow_close" and not spec.delay:
            w.at(node, f"{what}: a slow_close fault needs delay: (e.g. 1s)")
    if kind in PROCESS_FAULTS:
        problem = _target_problem(target, nodes, consumers, workload)
        if problem:
            w.at(node, f"{what}: {problem}")
    lasting = ("stop", "cpu", *(k for k in PROXY_FAULTS if k != "reset"))
    if kind in lasting and duration is None:
        w.at(node, f"{what}: a {kind} fault needs for: (how long it lasts, e.g. 2s)")
    if kind == "cpu" and spec.cores > (os.cpu_count() or 1):
        w.at(node, f"{what}: cores: {spec.cores} is more than this machine has ({os.cpu_count()})")
    return [spec]


def _target_problem(
    target: str, nodes: int, consumers: list[ConsumerSpec], workload: WorkloadSpec
) -> str | None:
    parts = target.split(":")
    if target in ("webhook", "gateway"):
        return None if workload.gateway else f"{target} needs workload.gateway: true"
    if parts[0] == "broker" and len(parts) == 2:
        if parts[1] == "leader":
            return None if nodes == 3 else "broker:leader needs broker: {nodes: 3}"
        if parts[1].isdigit() and int(parts[1]) < nodes:
            return None
        return f"no broker {parts[1]!r} (nodes 0..{nodes - 1}, or leader)"
    if parts[0] == "consumer" and len(parts) == 3:
        spec = next((c for c in consumers if c.name == parts[1]), None)
        if spec is None:
            return f"no consumer named {parts[1]!r}"
        if parts[2] == "active":
            return None
        if not parts[2].isdigit() or int(parts[2]) >= spec.processes:
            return (
                f"consumer {parts[1]!r} has processes 0..{spec.processes - 1} (or active), "
                f"not {parts[2]!r}"
            )
        return None
    if parts[0] == "publisher" and len(parts) == 2:
        if parts[1].isdigit() and int(parts[1]) < workload.publishers:
            return None
        return f"publishers are 0..{workload.publishers - 1}, not {parts[1]!r}"
    return f"target must be broker:N, broker:leader, consumer:NAME:N or publisher:N, not {target!r}"
