"""Dead letters: what becomes of an event whose handler failed.

When a handler raises, the bus publishes a :class:`DeadLetter` on :data:`DEAD_LETTER_TOPIC`
after the current dispatch. Subscribe to it like any event (``@bus.on(DeadLetter)``) to log,
park or retry failures. A handler of dead letters that fails is logged, never dead-lettered
again, so a broken dead-letter handler cannot loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidings.event import Envelope, event

__all__ = ("DEAD_LETTER_TOPIC", "DeadLetter")

DEAD_LETTER_TOPIC = "tidings.dead_letter"
"""The topic dead letters are published on."""


@event(DEAD_LETTER_TOPIC)
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that a handler failed to handle, or that a transport did not publish.

    Attributes:
        envelope: the envelope that was being delivered (or published: publish it again
            to re-send it; its id makes the retry safe).
        handler: the failing handler's qualified name (``module.qualname``), or
            ``"tidings.publish"`` for an event a bus's transport did not publish after
            ``publish`` returned.
        error: the exception the handler raised.
        attempts: how many times delivery was attempted before giving up.
    """

    envelope: Envelope[Any]
    handler: str
    error: BaseException
    attempts: int = 1

    @property
    def reason(self) -> str:
        """The error as ``ExceptionType: message``."""
        return f"{type(self.error).__name__}: {self.error}"
