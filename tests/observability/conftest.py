"""Helpers for the observability tests: scraping /metrics, collecting spans, a nats-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tidings.testing.asgi import call_asgi
from tidings.testing.nats_server import NatsServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def asgi_get(app: Any, path: str = "/metrics") -> tuple[int, bytes]:
    """GET ``path`` from an ASGI app, as a server would call it; ``(status, body)``."""
    return await call_asgi(app, "GET", path)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, parsed by prometheus-client itself."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; KeyError naming it when absent."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(f"no sample {name}{labels}")
    return samples[key]


class Spans:
    """An SDK tracer provider recording into memory."""

    def __init__(self, **options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(**options)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def finished(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]


@pytest.fixture
def spans() -> Iterator[Spans]:
    recorder = Spans()
    yield recorder
    recorder.provider.shutdown()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server with JetStream for these tests, in a temporary directory."""
    with NatsServer(name="tidings-observability-tests") as server:
        yield server
