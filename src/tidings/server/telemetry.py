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
``tidings_gateway_route_dispatches_total`` counter   ``{route, result}``: finished dispatches,
                                                     ``ok`` or ``error`` (a target failed)
``tidings_gateway_route_dead_letters_total`` counter ``{route}``: dispatches dead-lettered
``tidings_gateway_route_variants_total``  counter    ``{route, variant}``: split choices
``tidings_gateway_route_latency_seconds`` histogram  ``{route}``: dispatch to last target
                                                     (:mod:`tidings.gateway.stats`)
``tidings_gateway_source_messages_total`` counter    ``{source, kind, outcome}``: messages a
                                                     broker source ``received``, ``accepted``,
                                                     ``dead_lettered``, ``acknowledged``,
                                                     ``ack_failed``, ``retried``
``tidings_gateway_source_reconnects_total`` counter  ``{source, kind}``: connections after the
                                                     first
``tidings_gateway_source_connected``      gauge      ``{source, kind}``: 1 while connected
========================================  =========  =========================================

Values are read from the gateway's counters when Prometheus scrapes (nothing per event).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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
        yield from _route_metrics(gateway)
        yield from _source_metrics(gateway)


_SOURCE_OUTCOMES = (
    "received",
    "accepted",
    "dead_lettered",
    "acknowledged",
    "ack_failed",
    "retried",
)


def _source_metrics(gateway: Gateway) -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "tidings_gateway_source_messages",
        "Messages of broker sources by outcome",
        labels=["source", "kind", "outcome"],
    )
    reconnects = CounterMetricFamily(
        "tidings_gateway_source_reconnects",
        "Reconnections of broker sources",
        labels=["source", "kind"],
    )
    connected = GaugeMetricFamily(
        "tidings_gateway_source_connected",
        "Whether a broker source is connected",
        labels=["source", "kind"],
    )
    for source in gateway.brokers.describe_sources():
        labels = [source["name"], source["protocol"]]
        for outcome in _SOURCE_OUTCOMES:
            messages.add_metric([*labels, outcome], source[outcome])
        reconnects.add_metric(labels, source["reconnects"])
        connected.add_metric(labels, 1 if source["connected"] else 0)
    yield from (messages, reconnects, connected)


def _route_metrics(gateway: Gateway) -> Iterator[Metric]:
    dispatches = CounterMetricFamily(
        "tidings_gateway_route_dispatches",
        "Finished dispatches by route and result",
        labels=["route", "result"],
    )
    dead = CounterMetricFamily(
        "tidings_gateway_route_dead_letters", "Dispatches dead-lettered by route", labels=["route"]
    )
    variants = CounterMetricFamily(
        "tidings_gateway_route_variants", "Split variants chosen", labels=["route", "variant"]
    )
    latency = HistogramMetricFamily(
        "tidings_gateway_route_latency_seconds",
        "Dispatch to last target, retries included",
        labels=["route"],
    )
    for route in gateway.stats.totals():
        dispatches.add_metric([route.route, "ok"], route.events - route.errors)
        dispatches.add_metric([route.route, "error"], route.errors)
        dead.add_metric([route.route], route.dead_lettered)
        for variant, count in sorted(route.variants.items()):
            variants.add_metric([route.route, variant], count)
        buckets = [(f"{bound:.6g}", count) for bound, count in route.buckets]
        buckets.append(("+Inf", route.events))
        latency.add_metric([route.route], buckets, route.latency_sum)
    yield from (dispatches, dead, variants, latency)


def registry_for(gateway: Gateway) -> CollectorRegistry:
    """A registry with the bus's metrics and the gateway's."""
    registry = CollectorRegistry(auto_describe=True)
    Metrics(gateway.bus, registry=registry)
    registry.register(GatewayCollector(gateway))
    return registry
