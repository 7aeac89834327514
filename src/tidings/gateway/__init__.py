"""The event gateway as a library: config, route table, runner.

Needs the ``tidings[gateway]`` extra. An application runs the same routes in-process::

    config = load_config(["gateway.yaml"])
    async with tidings.Bus(store="sqlite:///events.db") as bus:
        gateway = Gateway(bus, config)
        await gateway.start()
        await gateway.accept([envelope])      # durable, then routed from the log
        await gateway.stop()

``tidings serve`` (:mod:`tidings.server`) puts HTTP in front of it. Modules:
:mod:`~tidings.gateway.config` (YAML schema and validation), :mod:`~tidings.gateway.expressions`
(CEL), :mod:`~tidings.gateway.table` (routes, splits, redaction),
:mod:`~tidings.gateway.targets` (topics, webhooks), :mod:`~tidings.gateway.runner`.
"""

from __future__ import annotations

try:  # the extra's modules, checked before any submodule needs them
    import cel  # noqa: F401
    import httpx  # noqa: F401
    import watchfiles  # noqa: F401
    import yaml  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tidings.gateway needs {exc.name}: install it with pip install 'tidings[gateway]'"
    ) from exc

from tidings.gateway.config import (
    DEFAULT_DEAD_LETTER,
    ConfigError,
    GatewayConfig,
    Problem,
    RouteConfig,
    TargetConfig,
    load_config,
    parse_config,
)
from tidings.gateway.expressions import CelError, compile_condition
from tidings.gateway.runner import CONFIG_REJECTED_TOPIC, EventIdConflictError, Gateway
from tidings.gateway.table import VARIANT_HEADER, Dispatch, RouteTable, choose_variant

__all__ = (
    "CONFIG_REJECTED_TOPIC",
    "DEFAULT_DEAD_LETTER",
    "VARIANT_HEADER",
    "CelError",
    "ConfigError",
    "Dispatch",
    "EventIdConflictError",
    "Gateway",
    "GatewayConfig",
    "Problem",
    "RouteConfig",
    "RouteTable",
    "TargetConfig",
    "choose_variant",
    "compile_condition",
    "load_config",
    "parse_config",
)
