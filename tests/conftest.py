"""Shared fixtures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

import tidings
from tidings.testing.brokers import Mosquitto


@pytest.fixture
def bus() -> Iterator[tidings.Bus]:
    """A fresh in-process bus, closed after the test."""
    with tidings.Bus() as bus:
        yield bus


# -- brokers (bridge and gateway tests): skipped with the reason when missing, failed under CI

AMQP_URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def unavailable(reason: str) -> None:
    """Skip the test for ``reason``, or fail it under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing broker fails the run)")
    pytest.skip(reason)


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own, started; the test may stop and start it again."""
    try:
        broker = Mosquitto()
    except FileNotFoundError as exc:
        unavailable(str(exc))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
async def amqp_url() -> str:
    """The shared RabbitMQ's URL, after checking it answers (else skip, or fail under CI)."""
    import aio_pika

    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:
        unavailable(f"no RabbitMQ at {AMQP_URL} ({type(exc).__name__}: {exc})")
    await connection.close()
    return AMQP_URL


@pytest.fixture
def unique() -> str:
    """A name unique to this test, for queues and exchanges."""
    return f"tidings-test-{uuid.uuid4().hex[:10]}"
