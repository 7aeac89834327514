"""The prometheus extra: Metrics counts deliveries in the Prometheus exposition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

import tidings
from tidings.observability import Metrics

registry = CollectorRegistry()
with tidings.Bus() as bus:
    bus.subscribe("smoke.>", lambda event: None)
    Metrics(bus, registry=registry)
    for n in range(3):
        bus.publish({"n": n}, topic="smoke.counted")
    text = generate_latest(registry).decode()
line = next(line for line in text.splitlines() if line.startswith("tidings_events_total{"))
assert 'status="success"' in line, text
assert line.endswith(" 3.0"), text
print("ok")
