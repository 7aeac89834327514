"""Helpers for testing code that uses tidings.

``with bus.record() as recorded:`` records what a bus publishes; :class:`Recorder` offers
``assert_published`` and friends. Conformance suites for stores and transports live here too.
"""

from tidings.recording import Recorder

__all__ = ("Recorder",)
