"""Structured logs: every record about an event carries its id, topic, subscription and trace."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

import tidings
from tidings.observability import LOG_FORMAT, EventLogFilter, Tracing, log_fields

from .conftest import Spans


@tidings.event("logs.order")
@dataclass(frozen=True)
class Order:
    n: int


def test_a_handler_failure_is_logged_with_the_event_fields(
    caplog: pytest.LogCaptureFixture, spans: Spans
) -> None:
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)

        def declines(order: Order) -> None:
            raise ValueError("declined")

        sub = bus.subscribe(Order, declines)
        with caplog.at_level(logging.DEBUG, logger="tidings"):
            envelope = bus.publish(Order(1))
    [record] = [r for r in caplog.records if "failed on event" in r.getMessage()]
    [send] = spans.named("send logs.order")
    assert record.event_id == envelope.id  # type: ignore[attr-defined]
    assert record.topic == "logs.order"  # type: ignore[attr-defined]
    assert record.subscription == sub.name  # type: ignore[attr-defined]
    assert record.trace_id == f"{send.context.trace_id:032x}"  # type: ignore[attr-defined]


def test_the_filter_fills_missing_fields_and_the_current_trace(spans: Spans) -> None:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", None, None)
    assert EventLogFilter().filter(record)
    assert (
        logging.Formatter(LOG_FORMAT)
        .format(record)
        .endswith("hello [event= topic= subscription= trace=]")
    )
    with spans.provider.get_tracer("test").start_as_current_span("request") as span:
        inside = logging.LogRecord("app", logging.INFO, __file__, 1, "hi", None, None)
        EventLogFilter().filter(inside)
    assert inside.trace_id == f"{span.get_span_context().trace_id:032x}"  # type: ignore[attr-defined]


def test_log_fields_reads_the_traceparent() -> None:
    envelope = tidings.Envelope(
        "logs.order",
        Order(2),
        1,
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    fields = log_fields(envelope, "handler.name")
    assert fields == {
        "event_id": envelope.id,
        "topic": "logs.order",
        "subscription": "handler.name",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    assert log_fields()["trace_id"] == ""
    assert log_fields(tidings.Envelope("t", 1, 1, headers={"traceparent": "bad"}))["trace_id"] == ""
