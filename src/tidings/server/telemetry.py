"""The gateway's Prometheus metrics, next to the bus's (:class:`tidings.observability.metrics.Metrics`).

========================================  =========  =========================================
``tidings_config_reloads_total``          counter    ``{result}``: ``accepted`` / ``rejected``
``tidings_config_generation``             gauge      the generation of the table in force
``tidings_gateway_accepted_total``        counter    events appended by ``POST /events``
``tidings_gateway_routed_total``          counter    log records routed
``tidings_gateway_deliveries_total``      counter    ``{kind, result}``: per target kind,
                                                     ``delivered``, ``retried``,
                                                     ``dead_lettered``, ``failed``
``tidings_gateway_condition_errors_total`` counter   CEL conditions that failed on an event
                                                     (table in force)
========================================  =========  =========================================

Values are read from the gateway's counters when Prometheus scrapes (nothing per event).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tidings.gateway.runner import Gateway
from tidings.observability.metrics import Metrics

__all__ = ("GatewayCollector", "registry_for")


class GatewayCollector(Collector):
    """Collects ``gateway``'s counters (see the module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gateway = self._gateway
        reloads = CounterMetricFamily(
            "tidings_config_reloads", "Config reloads by result", labels=["result"]
        )
        for result in ("accepted", "rejected"):
            reloads.add_metric([result], gateway.reloads[result])
        yield reloads
        yield GaugeMetricFamily(
            "tidings_config_generation",
            "Generation of the config in force",
            value=gateway.table.generation,
        )
        yield CounterMetricFamily(
            "tidings_gateway_accepted", "Events accepted over HTTP", value=gateway.accepted
        )
        yield CounterMetricFamily(
            "tidings_gateway_routed", "Log records routed", value=gateway.routed
        )
        deliveries = CounterMetricFamily(
            "tidings_gateway_deliveries", "Target deliveries by result", labels=["kind", "result"]
        )
        for (kind, result), count in sorted(gateway.sender.outcomes.items()):
            deliveries.add_metric([kind, result], count)
        yield deliveries
        yield CounterMetricFamily(
            "tidings_gateway_condition_errors",
            "CEL conditions that failed on an event (table in force)",
            value=gateway.table.condition_errors,
        )


def registry_for(gateway: Gateway) -> CollectorRegistry:
    """A registry with the bus's metrics and the gateway's."""
    registry = CollectorRegistry(auto_describe=True)
    Metrics(gateway.bus, registry=registry)
    registry.register(GatewayCollector(gateway))
    return registry
