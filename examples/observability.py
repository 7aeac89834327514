"""Traces, metrics and logs of a bus, in one process: ``python examples/observability.py``.

Needs ``pip install 'tidings[otel,prometheus]' opentelemetry-sdk``. Prints each finished span
and the log records with their event fields, serves ``/metrics`` on 127.0.0.1:9464 while it
runs, and ends with the metrics summary. Point Prometheus at it and import
``grafana-dashboard.json`` into Grafana to see the same figures on a dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import tidings
from tidings.observability import LOG_FORMAT, EventLogFilter, Metrics, Tracing, serve_metrics


@tidings.event("shop.orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float


async def main() -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(formatter=lambda span: f"span {span.name}\n"))
    )
    trace.set_tracer_provider(provider)

    handler = logging.StreamHandler()
    handler.addFilter(EventLogFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger("tidings").addHandler(handler)
    logging.getLogger("tidings").setLevel(logging.DEBUG)

    async with tidings.Bus(source="urn:example:shop") as bus:
        Tracing(bus)
        metrics = Metrics(bus)
        server = serve_metrics(9464)

        @bus.on(OrderPlaced)
        def reserve(event: OrderPlaced) -> None:
            if event.amount > 1000:
                raise ValueError(f"no stock for order {event.order_id}")

        @bus.on("shop.>", mode="queued", maxsize=8, overflow="drop_newest")
        async def audit(event: OrderPlaced) -> None:
            await asyncio.sleep(0.001)

        for n in range(20):
            await bus.emit(OrderPlaced(f"o{n}", 50.0 * n + (2000 if n == 7 else 0)))
        await bus.aclose()
        print(f"\nmetrics served at {server.url} (stopping now)\n{metrics.summary()}")
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
