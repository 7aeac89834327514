"""The otel extra: Tracing attaches to a bus, which goes on delivering."""

from __future__ import annotations

from opentelemetry import trace

import tidings
from tidings.observability import Tracing

with tidings.Bus() as bus:
    got: list[object] = []
    bus.subscribe("smoke.>", got.append)
    Tracing(bus, tracer_provider=trace.NoOpTracerProvider())
    bus.publish({"n": 1}, topic="smoke.traced")
    assert got == [{"n": 1}], got
print("ok")
