"""Real brokers for bridge tests, on loopback only: :class:`Mosquitto` (a broker of the
caller's own on a free port, with a generated config, which it may stop and start again)
and :class:`RabbitNode` (a RabbitMQ node of the caller's own, likewise). To make a shared
broker (the machine's RabbitMQ) "go away" for the clients behind it without restarting it,
put the chaos toolkit's :class:`tidings.chaos.FaultProxy` between.

::

    broker = Mosquitto()          # FileNotFoundError when the binary is missing
    broker.start()
    ...  MqttBridge(bus, broker.url, ...)
    broker.stop(); broker.start()  # same port, sessions kept (persistence on)
    broker.close()
    node = RabbitNode()           # FileNotFoundError without rabbitmq-server
    node.start()                  # about 8 s; node.url is amqp://guest:guest@127.0.0.1:PORT/
    node.stop(); node.start()     # same port and data: durable queues, persistent messages
    node.close()

Every wait is bounded (:class:`TimeoutError`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tidings.testing._processes import stop_process
from tidings.testing.nats_server import free_port

__all__ = ("Mosquitto", "RabbitNode", "find_mosquitto", "find_rabbitmq_server", "wait_until")


def find_mosquitto() -> str:
    """The path of the ``mosquitto`` binary (``TIDINGS_TEST_MOSQUITTO``, else
    ``/usr/sbin/mosquitto``, else ``PATH``).

    Raises:
        FileNotFoundError: naming the package to install.
    """
    return _find_binary("TIDINGS_TEST_MOSQUITTO", "/usr/sbin/mosquitto", "mosquitto")


def _find_binary(variable: str, default: str, name: str) -> str:
    """``$variable`` if set, else ``default`` if it is a file, else ``name`` on ``PATH``."""
    given = os.environ.get(variable, default)
    if Path(given).is_file():
        return given
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name} binary at {given} (apt-get install {name})")
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
        stop_process(process, 10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def find_rabbitmq_server() -> str:
    """The path of ``rabbitmq-server`` (``TIDINGS_TEST_RABBITMQ_SERVER``, else
    ``/usr/lib/rabbitmq/bin/rabbitmq-server``, else ``PATH``).

    Raises:
        FileNotFoundError: naming the package to install.
    """
    return _find_binary(
        "TIDINGS_TEST_RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"
    )


class RabbitNode:
    """A RabbitMQ node of the caller's own, for tests that stop and restart their broker (a
    machine's shared RabbitMQ cannot be restarted under other tests): the installed
    ``rabbitmq-server`` on free loopback ports, with its own data directory (durable queues
    and persistent messages survive :meth:`stop` and :meth:`start`, which keep its port and
    name), its own Erlang cookie, no plugins and no config file. ``guest``/``guest``, which
    RabbitMQ allows from loopback."""

    def __init__(self) -> None:
        self.binary = find_rabbitmq_server()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-rabbit-"))
        self.name = f"tidings-test-{self.port}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(self.dir),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "none"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60.0) -> None:
        """Start the node; return once it listens (about 8 s on a 2-core machine)."""
        self.process = subprocess.Popen(
            [self.binary],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own: stop() ends the whole node
        )
        try:
            _wait_port(self.port, timeout, self.process)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node cleanly (SIGTERM to its process group), waiting for the exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
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
