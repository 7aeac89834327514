"""Observability: OpenTelemetry traces, Prometheus metrics and structured logs of a bus.

One module per concern, each optional backend behind its own extra:

- :mod:`tidings.observability.tracing` (``pip install 'tidings[otel]'``):
  :class:`~tidings.observability.tracing.Tracing` puts a producer span on each publish and a
  consumer span around each handler call, and carries W3C trace context and baggage in the
  envelope headers, in process and across processes.
- :mod:`tidings.observability.metrics` (``pip install 'tidings[prometheus]'``):
  :class:`~tidings.observability.metrics.Metrics`, a Prometheus collector of events by
  outcome, latency, loss ratio, queue depth...; :func:`serve_metrics` and
  :func:`metrics_app` expose it.
- :mod:`tidings.observability.logs` (standard library only): the event id, topic,
  subscription and trace id the library puts on its log records, and a filter and format
  to show them.

::

    from tidings.observability import Metrics, Tracing, serve_metrics

    Tracing(bus)        # spans through the global tracer provider
    Metrics(bus)        # the default prometheus-client registry
    serve_metrics(9464)

An observed bus's hot path costs what its hooks do (see ``benchmarks/bench_observability.py``);
a bus nobody observes pays nothing, and ``import tidings`` imports neither OpenTelemetry
nor prometheus-client. The names below load their module (and its backend) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidings.observability.logs import LOG_FORMAT, EventLogFilter, log_fields

if TYPE_CHECKING:
    from tidings.observability._observer import replaying
    from tidings.observability.metrics import Metrics, MetricsServer, metrics_app, serve_metrics
    from tidings.observability.tracing import Tracing

__all__ = (
    "LOG_FORMAT",
    "EventLogFilter",
    "Metrics",
    "MetricsServer",
    "Tracing",
    "log_fields",
    "metrics_app",
    "replaying",
    "serve_metrics",
)

_LAZY = {
    "Metrics": "tidings.observability.metrics",
    "MetricsServer": "tidings.observability.metrics",
    "metrics_app": "tidings.observability.metrics",
    "serve_metrics": "tidings.observability.metrics",
    "Tracing": "tidings.observability.tracing",
    "replaying": "tidings.observability._observer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidings.observability' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
