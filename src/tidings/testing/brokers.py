"""Real brokers for bridge tests, on loopback only: :class:`Mosquitto` (a broker of the
caller's own on a free port, with a generated config, which it may stop and start again).
To make a shared broker (the machine's RabbitMQ) "go away" for the clients behind it
without restarting it, put the chaos toolkit's :class:`tidings.chaos.FaultProxy` between.

::

    broker = Mosquitto()          # FileNotFoundError when the binary is missing
    broker.start()
    ...  MqttBridge(bus, broker.url, ...)
    broker.stop(); broker.start()  # same port, sessions kept (persistence on)
    broker.close()

Every wait is bounded (:class:`TimeoutError`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tidings.testing.nats_server import free_port

__all__ = ("Mosquitto", "find_mosquitto", "wait_until")


def find_mosquitto() -> str:
    """The path of the ``mosquitto`` binary (``TIDINGS_TEST_MOSQUITTO``, else
    ``/usr/sbin/mosquitto``, else ``PATH``).

    Raises:
        FileNotFoundError: naming the package to install.
    """
    given = os.environ.get("TIDINGS_TEST_MOSQUITTO", "/usr/sbin/mosquitto")
    if Path(given).is_file():
        return given
    found = shutil.which("mosquitto")
    if found is None:
        raise FileNotFoundError(f"no Mosquitto binary at {given} (apt-get install mosquitto)")
    return found


def _wait_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the broker exited with status {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Mosquitto:
    """A Mosquitto broker on a free loopback port with a generated config: anonymous,
    persistent (sessions and queued QoS 1 messages survive a stop and start), large
    in-flight and queue limits."""

    def __init__(self) -> None:
        self.binary = find_mosquitto()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-mosquitto-"))
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 100000\n"
            "log_dest none\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 10.0, self.process)

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM: it saves its sessions), waiting for the exit."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``predicate()`` holds (checked every 10 ms: counters of a bridge, messages
    a broker client collected), at most ``timeout`` seconds.

    Raises:
        TimeoutError: it did not hold in time.
    """
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - counters have no event to await
            await asyncio.sleep(0.01)
