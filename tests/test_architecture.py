"""The package's structure, checked from its source (``ast``; nothing is imported):

- no module reads or calls another module's private names: an attribute access
  ``obj._name`` (``obj`` not ``self``/``cls``) is allowed only when ``_name`` is defined in
  the same module (assigned on ``self``/``cls``, or a method, class attribute or slot of
  one of its classes), or when it is on :data:`ALLOWED`, each entry saying why. The check
  goes by name, not type: a module that defines ``_x`` itself may read another's ``_x``
  unnoticed. A name given as a string is a reach too: ``getattr(obj, "_name")`` (and
  ``hasattr``/``setattr``/``delattr``) and a call passing ``vars(obj)`` with ``"_name"``
  (``dict.get(vars(obj), "_name")``, or the same in ``functools.partial``) count as
  ``obj._name``. Imports count too (type-checking ones included): ``from tidings.m import
  _name`` reaches into ``tidings.m``, and a private module (``tidings.pkg._m``, or one
  under it) is private to ``tidings.pkg``: only the modules of ``tidings.pkg``, of the
  packages within it and of the packages enclosing it import it (``tidings.bus`` may use
  ``tidings.observability._observer``; ``tidings.chaos`` may not use
  ``tidings.testing._processes``: what two sibling packages share sits in a private module
  of a package enclosing both, such as ``tidings._process_state``);
- the tidings modules import each other without cycles (imports run at import time and
  imports inside functions alike; those under ``if TYPE_CHECKING:`` are not imports).
  ``from tidings import codec`` imports the module ``tidings.codec``, not the package;
- the bus carries published events through its one ``Carrier`` (``tidings._ports``): of its
  log and remote side it reaches directly only what is not carrying (:data:`NOT_CARRYING`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tidings

ROOT = Path(tidings.__file__).parent

_KAFKA_CONSUMER_STOP = (
    "aiokafka's consumer stop() waits up to the request timeout (for ever, for a commit) on a "
    "broker gone: past the close's deadline the close ends its tasks and closes its fetcher "
    "(no public way) so no task or connection outlives the close"
)

ALLOWED: dict[tuple[str, str], str] = {
    # Standard library and third-party internals, read on purpose.
    ("tidings._coroutines", "awaited._asyncio_future_blocking"): (
        "asyncio's documented future protocol: a yielded future sets this flag"
    ),
    ("tidings.queues", "asyncio.events._get_running_loop"): (
        "the C-accelerated running-loop lookup, without get_running_loop's exception"
    ),
    ("tidings.observability.tracing", "_RUNTIME_CONTEXT._current_context"): (
        "OpenTelemetry's context variable, read without a function call on the hot path"
    ),
    ("tidings.observability.tracing", "trace._TRACER_PROVIDER"): (
        "whether an OpenTelemetry SDK is configured yet: one module attribute read"
    ),
    ("tidings.transports.kafka", "producer._txn_manager"): (
        "aiokafka's producer id (no public accessor): read only for diagnostics"
    ),
    ("tidings.transports.kafka", "producer._sender"): (
        "aiokafka's stop() waits for ever for batches a broker gone never answers: the close "
        "ends its sender task (no public way) so stop() closes the connections"
    ),
    ("tidings.transports.kafka", "consumer._coordinator"): _KAFKA_CONSUMER_STOP,
    ("tidings.transports.kafka", "consumer._fetcher"): _KAFKA_CONSUMER_STOP,
    ("tidings.transports.kafka", "coordinator._coordination_task"): _KAFKA_CONSUMER_STOP,
    ("tidings.transports.kafka", "coordinator._heartbeat_task"): _KAFKA_CONSUMER_STOP,
    ("tidings.transports.kafka", "coordinator._commit_refresh_task"): _KAFKA_CONSUMER_STOP,
    ("tidings.transports.nats", "self._client()._nuid"): (
        "nats-py's unique-id generator, for inbox names it does not make itself"
    ),
    ("tidings.bridges.mqtt", "client._client"): (
        "aiomqtt 2.5 has no manual acknowledgement (its issue #345): the bridge switches on "
        "paho-mqtt's manual_ack on the paho client inside aiomqtt's and acks with it"
    ),
    ("tidings.bridges.mqtt", "client._disconnected"): (
        "aiomqtt 2.5 reads the reason of a lost connection only in its message iterator; its "
        "__aexit__ leaves it unread (aiomqtt #344, #375), so a client closed before the "
        "iterator saw the loss logs 'Future exception was never retrieved': the bridge reads "
        "it (with getattr) and reports the loss once"
    ),
    # Namedtuple's public API is spelled with an underscore.
    ("tidings.store.base", "query._replace"): "namedtuple._replace",
    ("tidings.store.base", "self._query._replace"): "namedtuple._replace",
    ("tidings.store.cli", "query._replace"): "namedtuple._replace",
    ("tidings.store.url", "parts._replace"): "namedtuple._replace (urllib's SplitResult)",
    # Known reaches left for their owners' branches (tracked; remove when fixed).
    ("tidings.bus", "self._clock._state"): (
        "publish runs HybridClock.now's send rule on the hot path (tidings._fastpath.Publisher)"
    ),
    ("tidings.bus", "self._clock._wall"): "the physical clock of that send rule (as above)",
    ("tidings.store.cli", "store._fetch"): "the log CLI reads the store's paging primitive",
    ("tidings.store.cli", "log._fetch"): "the log CLI reads the store's paging primitive",
    ("tidings.store.cli", "log._changes"): "the log CLI follows the store's change feed",
    ("tidings.store.cli", "log._start_watching"): "the log CLI follows the store's change feed",
    ("tidings.store.cli", "log._wait_for_change"): "the log CLI follows the store's change feed",
}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


MODULES = dict(_modules())


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _private_defined(tree: ast.Module) -> set[str]:
    """The private attribute names a module defines: assigned on ``self``/``cls``, and the
    methods, class attributes and slots of its classes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(item.name)
                elif isinstance(item, ast.Assign | ast.AnnAssign):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    for target in targets:
                        if isinstance(target, ast.Name):
                            names.add(target.id)
                            if target.id == "__slots__" and item.value is not None:
                                names.update(
                                    c.value
                                    for c in ast.walk(item.value)
                                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                                )
    return {n for n in names if n.startswith("_")}


_BY_STRING = ("getattr", "hasattr", "setattr", "delattr")


def _private_string(node: ast.expr) -> str | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.isidentifier()
        and node.value.startswith("_")
        and not node.value.startswith("__")
    ):
        return node.value
    return None


def _string_reaches(call: ast.Call) -> Iterator[tuple[ast.expr, str]]:
    """The ``(object, private name)`` pairs ``call`` reaches by a string."""
    args = call.args
    if isinstance(call.func, ast.Name) and call.func.id in _BY_STRING and len(args) >= 2:
        attr = _private_string(args[1])
        if attr is not None:
            yield args[0], attr
    namespaces = [
        a.args[0]
        for a in args
        if isinstance(a, ast.Call)
        and isinstance(a.func, ast.Name)
        and a.func.id == "vars"
        and len(a.args) == 1
    ]
    for namespace in namespaces:
        for arg in args:
            attr = _private_string(arg)
            if attr is not None:
                yield namespace, attr


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _imported(tree: ast.Module) -> Iterator[str]:
    """The dotted names a module's imports name (type-checking imports too): each module of
    ``import a.b``, and ``m.name`` for each ``name`` of ``from m import name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _import_reaches(name: str, tree: ast.Module) -> Iterator[str]:
    """The private tidings names and modules that module ``name`` may not import (see the
    module's docstring), each as imported (``tidings.testing._processes.stop_process``)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for target in _imported(tree):
        if not target.startswith("tidings."):
            continue
        module = target if target in MODULES else target.rpartition(".")[0]
        if module != target and _is_private(target.rpartition(".")[2]):
            yield target  # a private name of another module
            continue
        parts = module.split(".")
        private = [i for i, part in enumerate(parts) if _is_private(part)]
        if not private:
            continue
        owner = ".".join(parts[: private[0]])
        if not (
            package == owner
            or package.startswith(f"{owner}.")  # within the owner
            or owner.startswith(f"{package}.")  # enclosing it
        ):
            yield target


def _foreign_private_reaches() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        found.update((name, target) for target in _import_reaches(name, tree))
        own = _private_defined(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for obj, attr in _string_reaches(node):
                    if attr not in own:
                        found.add((name, f"{ast.unparse(obj)}.{attr}"))
                continue
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if attr in own:
                continue
            found.add((name, ast.unparse(node)))
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The tidings modules ``name`` imports (at import time or inside functions)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            modules = [s for s in subs if s in MODULES]
            out.update(modules)
            if node.module in MODULES and len(modules) < len(subs):
                out.add(node.module)
        else:
            visit(node)

    visit(ast.parse(path.read_text()))
    out.discard(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_no_module_reaches_into_another_modules_private_names() -> None:
    reaches = _foreign_private_reaches()
    unexplained = sorted(reaches - ALLOWED.keys())
    assert unexplained == [], (
        "private names of another module (add a public method or port, or an ALLOWED "
        f"entry saying why): {unexplained}"
    )


def test_every_allowed_reach_still_exists() -> None:
    stale = sorted(ALLOWED.keys() - _foreign_private_reaches())
    assert stale == [], f"remove these ALLOWED entries, the code no longer does it: {stale}"


def test_the_import_graph_has_no_cycles() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_log_and_the_remote_side_do_not_import_the_bus() -> None:
    for name in ("tidings._log", "tidings._remote", "tidings.observability._observer"):
        tree = ast.parse(MODULES[name].read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        }
        assert "tidings.bus" not in imported, name


NOT_CARRYING = frozenset(
    {"follow", "unfollow", "followers", "store", "subscribe", "unsubscribe", "subscriptions"}
    | {"transport"}
)
"""What the bus may reach of its log (``_log``) and remote side (``_remote``) directly:
following the log and subscribing remotely. Carrying what is published (write-ahead, send,
emit, start, flush, close) goes through its one ``Carrier`` (``tidings._ports``)."""


def _parts_used_by_the_bus() -> set[str]:
    """The attributes ``bus.py`` reads of ``<x>._log`` and ``<x>._remote``, directly or
    through a local name bound to one."""
    tree = ast.parse(MODULES["tidings.bus"].read_text())

    def is_part(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr in ("_log", "_remote")

    aliases = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and is_part(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (is_part(node.value) or (isinstance(node.value, ast.Name) and node.value.id in aliases))
    }


def test_the_bus_carries_events_through_its_carrier_only() -> None:
    used = _parts_used_by_the_bus()
    assert "subscribe" in used  # the walker sees the aliased remote.subscribe(...)
    assert used <= NOT_CARRYING, sorted(used - NOT_CARRYING)


def test_each_carrier_has_every_method_of_the_port() -> None:
    from tidings._carrier import StoredAndSent
    from tidings._log import Log
    from tidings._ports import Carrier
    from tidings._remote import Remote

    port = {
        name
        for name, value in vars(Carrier).items()
        if callable(value) and not name.startswith("_")
    }
    assert {"write_ahead", "send", "carry", "start", "aclose"} <= port
    for part in (Log, Remote, StoredAndSent):
        assert port <= set(dir(part)), (part.__name__, sorted(port - set(dir(part))))


def test_the_checks_see_what_they_check() -> None:
    """The walkers find a reach, a cycle and a type-checking import when there is one."""
    tree = ast.parse("class A:\n    def f(self, o):\n        return o._x\n")
    assert "_x" not in _private_defined(tree)
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _imports("tidings.bus", MODULES["tidings.bus"]) >= {"tidings.routing"}
    assert "tidings._log" in _imports("tidings.bus", MODULES["tidings.bus"])  # in a function


def test_a_private_module_of_another_package_or_a_private_name_imported_is_a_reach() -> None:
    tree = ast.parse(
        "from tidings.testing._processes import stop_process\n"
        "from tidings.testing import _processes\n"
        "from tidings.bus import _BusPort, Bus\n"
        "from tidings.chaos.errors import FaultError\n"
        "from tidings._ports import Carrier\n"
        "import tidings.observability._observer\n"
    )
    assert set(_import_reaches("tidings.chaos.process", tree)) == {
        "tidings.testing._processes.stop_process",  # a sibling package's private module
        "tidings.testing._processes",
        "tidings.observability._observer",
        "tidings.bus._BusPort",  # a private name
    }
    # its own package's, and an enclosed package's private modules are its own internals
    assert set(_import_reaches("tidings.testing.brokers", tree)) == {
        "tidings.observability._observer",
        "tidings.bus._BusPort",
    }
    assert set(_import_reaches("tidings.dispatch", tree)) == {"tidings.bus._BusPort"}


def test_a_private_name_given_as_a_string_is_a_reach() -> None:
    source = (
        "getattr(trace, '_PROVIDER', None)\n"
        "functools.partial(dict.get, vars(trace), '_PROVIDER', True)\n"
        "getattr(o, '__name__')\n"
        "getattr(o, 'public')\n"
    )
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    found = {(ast.unparse(obj), attr) for call in calls for obj, attr in _string_reaches(call)}
    assert found == {("trace", "_PROVIDER")}
    assert ("tidings.observability.tracing", "trace._TRACER_PROVIDER") in _foreign_private_reaches()
