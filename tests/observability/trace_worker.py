"""A traced bus in a process of its own, for the cross-process tracing test.

``python trace_worker.py ROLE URL PREFIX STREAM``. Role ``ship`` handles ``obs.placed`` (group
``shipping``) and, from its handler, emits ``obs.shipped``; role ``notify`` handles
``obs.shipped`` (group ``notify``). Prints ``ready`` once subscribed, then ``span <json>`` for
every span it finishes, and runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import tidings
from tidings.observability import Tracing
from tidings.transports.nats import NatsTransport, StreamSettings


@tidings.event("obs.placed")
@dataclass(frozen=True)
class Placed:
    order: int


@tidings.event("obs.shipped")
@dataclass(frozen=True)
class Shipped:
    order: int


class StdoutExporter(SpanExporter):
    """Writes each finished span as one JSON line on stdout."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            record = {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                "attributes": dict(span.attributes or {}),
                "links": [
                    [f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}"]
                    for link in span.links
                ],
            }
            sys.stdout.write(f"span {json.dumps(record)}\n")
        sys.stdout.flush()
        return SpanExportResult.SUCCESS


async def main(role: str, url: str, prefix: str, stream: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(StdoutExporter()))
    transport = NatsTransport(url, prefix=prefix, stream=StreamSettings(name=stream))
    async with tidings.Bus(transport=transport, source=f"urn:test:{role}") as bus:
        Tracing(bus, tracer_provider=provider)
        if role == "ship":

            async def ship(event: Placed) -> None:
                await bus.emit(Shipped(event.order))

            bus.subscribe(Placed, ship, group="shipping")
        else:

            def notify(event: Shipped) -> None:
                pass

            bus.subscribe(Shipped, notify, group="notify")
        await bus.start()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stop.wait()
    provider.shutdown()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
