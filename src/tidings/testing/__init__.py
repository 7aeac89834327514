"""Helpers for testing code that uses tidings.

``with bus.record() as recorded:`` records what a bus publishes; :class:`Recorder` offers
``assert_published`` and friends. Conformance suites for stores and transports live here too:
:mod:`tidings.testing.transport_conformance` (needs pytest and pytest-asyncio), and
:mod:`tidings.testing.nats_server` starts real ``nats-server`` processes (one, or a cluster)
on loopback for tests, and :mod:`tidings.testing.asgi` calls an ASGI application (such as
the gateway's) as an HTTP server would, without one.
"""

from tidings.recording import Recorder

__all__ = ("Recorder",)
