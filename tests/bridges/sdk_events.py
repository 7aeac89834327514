"""A foreign CloudEvent as the cloudevents SDK makes it, for the bridges' tests to send in
(:data:`SAMPLE`, the one both bridges' tests use), and the check of what the bus holds of it
once a bridge took it in."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from tidings.cloudevents import to_cloudevent
from tidings.event import Envelope

__all__ = ("SAMPLE", "SdkSample", "assert_bad_input_reasons")


@dataclass(frozen=True)
class SdkSample:
    """The attributes of one foreign event using every attribute kind a bridge maps (source,
    type, subject, an exact time, the partition key, extensions) and its JSON data."""

    id: str
    source: str
    type: str
    subject: str
    time: dt.datetime
    partitionkey: str
    extensions: Mapping[str, str]
    data: Any

    def event(self, **changes: Any) -> CloudEvent:
        """The SDK's event, with ``changes`` to its attributes (``data=`` for its data)."""
        attributes: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": "1.0",
            "subject": self.subject,
            "datacontenttype": "application/json",
            "time": self.time,
            "partitionkey": self.partitionkey,
            **self.extensions,
        }
        data: Any = changes.pop("data", copy.deepcopy(self.data))
        attributes.update(changes)
        return CloudEvent(attributes=attributes, data=data)

    def assert_taken_in(self, env: Envelope[Any], time: str) -> None:
        """``env`` is this event as a bridge took it in (its time kept as ``time``, RFC 3339)."""
        assert env.source == self.source
        assert env.key == self.partitionkey
        assert env.headers == self.extensions
        assert env.payload == self.data
        assert env.attributes["type"] == self.type
        assert env.attributes["subject"] == self.subject
        assert to_cloudevent(env)["time"] == time


SAMPLE = SdkSample(
    id="sdk-1",
    source="https://devices.example.com/thermo 7",
    type="com.example.reading",
    subject="room 7",
    time=dt.datetime(2026, 1, 2, 12, 30, 45, 123456, tzinfo=dt.UTC),
    partitionkey="thermo-7",
    extensions={"site": "berlin"},
    data={"celsius": 21.5},
)
"""The foreign event of the bridges' tests: a source needing percent-encoding, a time exact
to the microsecond, an extension, JSON data."""


def assert_bad_input_reasons(reasons: list[str], *, wrong_type: str, bad_name: str) -> None:
    """``reasons`` are the dead-letter reasons of the bad input both bridges' tests send, in
    order: the sample with the time ``yesterday``, the sample without its id, the sample of
    type ``com.example.other``, a structured event that is not JSON, data that is no
    ``wrong_type``, and a message on a broker topic naming no tidings topic (``bad_name``)."""
    assert "yesterday" in reasons[0]
    assert "'id'" in reasons[1]
    assert "unknown CloudEvents type 'com.example.other'" in reasons[2]
    assert "DecodeError" in reasons[3]
    assert wrong_type in reasons[4]
    assert f"'{bad_name}'" in reasons[5]
