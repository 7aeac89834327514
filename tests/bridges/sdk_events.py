"""A foreign CloudEvent as the cloudevents SDK makes it, for the bridges' tests to send in,
and the check of what the bus holds of it once a bridge took it in."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from tidings.cloudevents import to_cloudevent
from tidings.event import Envelope

__all__ = ("SdkSample",)


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
