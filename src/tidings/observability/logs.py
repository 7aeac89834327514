"""Structured logs: what the library puts on its log records, and how to show it.

tidings logs with the standard :mod:`logging` module, under the ``tidings`` logger (and
its children), and never prints. Every record it emits about an event or a subscription
carries these attributes (``extra=`` fields), so a formatter or a JSON log handler can show
them:

==================  ==================================================================
``event_id``        the event's id
``topic``           the event's topic
``subscription``    the handler's qualified name
``trace_id``        the W3C trace id (32 hex digits) from the event's ``traceparent``
==================  ==================================================================

A record about neither has them empty, once :class:`EventLogFilter` is on its handler;
the filter also fills ``trace_id`` from the current OpenTelemetry span when the record has
none (when OpenTelemetry is installed). ::

    handler = logging.StreamHandler()
    handler.addFilter(EventLogFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger("tidings").addHandler(handler)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ("FIELDS", "LOG_FORMAT", "EventLogFilter", "log_fields")

FIELDS = ("event_id", "topic", "subscription", "trace_id")
"""The attributes tidings puts on its log records."""

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s %(message)s "
    "[event=%(event_id)s topic=%(topic)s subscription=%(subscription)s trace=%(trace_id)s]"
)
"""A :class:`logging.Formatter` format showing the fields (use with :class:`EventLogFilter`)."""


def trace_id_of(headers: Mapping[str, str]) -> str:
    """The trace id of a W3C ``traceparent`` header (``""`` when absent or malformed)."""
    parent = headers.get("traceparent", "")
    if len(parent) >= 55 and parent[2] == "-" and parent[35] == "-":
        return parent[3:35]
    return ""


def log_fields(envelope: Any = None, subscription: Any = None) -> dict[str, str]:
    """The ``extra=`` fields for a record about ``envelope`` and/or ``subscription``
    (a :class:`~tidings.Subscription` or a handler name)."""
    fields = {"event_id": "", "topic": "", "subscription": "", "trace_id": ""}
    if envelope is not None:
        fields["event_id"] = envelope.id
        fields["topic"] = envelope.topic
        fields["trace_id"] = trace_id_of(envelope.headers)
    if subscription is not None:
        fields["subscription"] = (
            subscription if isinstance(subscription, str) else subscription.name
        )
    return fields


class EventLogFilter(logging.Filter):
    """Gives every record the :data:`FIELDS` (empty when unknown) and fills ``trace_id``
    from the current OpenTelemetry span when the record has none. Never filters out."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, "")
        if not record.trace_id:  # type: ignore[attr-defined]
            record.trace_id = _current_trace_id()
        return True


def _current_trace_id() -> str:
    trace = sys.modules.get("opentelemetry.trace")  # only if the application uses it
    if trace is None:
        return ""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""
