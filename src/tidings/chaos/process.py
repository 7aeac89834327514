"""Process faults: SIGKILL, SIGSTOP/SIGCONT (a stalled process, like a long GC pause) and CPU
saturation, each bounded in time and undone on exit.

- :func:`kill` sends SIGKILL now and returns once the process has ended (nothing to undo:
  the caller restarts what it needs).
- :class:`Stop` stops a process (SIGSTOP) and continues it (SIGCONT) on :meth:`~Stop.undo`,
  on exit of its ``with`` block, or after ``seconds`` at the latest when used through
  :meth:`~Stop.for_seconds`; :meth:`~Stop.apply` returns once every thread of the process
  is stopped, :meth:`~Stop.undo` once none is.
- :class:`CpuBurn` saturates ``cores`` cores with busy processes that also end on their own
  after ``seconds`` (so even a SIGKILLed caller leaves nothing spinning for long);
  :meth:`~CpuBurn.undo` kills them now.

Each wait blocks its thread; on an event loop use the async forms, which wait without
blocking the loop: :func:`kill_async`, :meth:`~Stop.apply_async`, :meth:`~Stop.undo_async`
(each fault's, also as an ``async with`` block), and :meth:`~Stop.for_seconds`.

Each checks first that it can act (the process exists and may be signalled) and raises
:class:`~tidings.chaos.FaultError` before doing anything otherwise. A signal only queues:
``kill`` returns before the target's threads have taken it, and a thread running on another
core goes on meanwhile. So each signal is followed by a bounded wait until the kernel
reports it taken (``tidings._process_state``, which ``TansuBroker.pause`` uses too): past
``timeout`` (10 s by default) :class:`~tidings.chaos.FaultTimeoutError` is raised (a
:class:`Stop` is undone first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Self

from tidings._process_state import wait_for_process, wait_for_process_async
from tidings.chaos.errors import FaultError, FaultTimeoutError

__all__ = ("CpuBurn", "Stop", "check_signallable", "kill", "kill_async")

logger = logging.getLogger("tidings.chaos")

TIMEOUT = 10.0
"""How long, by default, a signalled process may take to stop, continue or end (seconds)."""

_BURNER_END = 5.0
"""How long :meth:`CpuBurn.undo` waits for each killed burner to end (seconds); one that
has not is left (killed: it ends, and it ends on its own after its time anyway)."""


def check_signallable(pid: int) -> None:
    """Raise :class:`FaultError` unless this process may signal ``pid``."""
    if pid <= 0:
        raise FaultError(f"no process to signal: pid {pid!r}")
    _signal(pid, 0)


def _signal(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid`` (0: none, the check alone); a :class:`FaultError` if it
    cannot be sent."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError as exc:
        raise FaultError(f"process {pid} does not exist (it ended?)") from exc
    except PermissionError as exc:
        raise FaultError(
            f"no permission to signal process {pid}; run as its user or choose one of yours"
        ) from exc


@contextlib.contextmanager
def _as_faults() -> Iterator[None]:
    """A wait for a signal to be taken failing as a fault: :class:`FaultTimeoutError` past its
    timeout, :class:`FaultError` if the process ended instead of stopping."""
    try:
        yield
    except TimeoutError as exc:
        raise FaultTimeoutError(str(exc)) from None
    except ProcessLookupError as exc:
        raise FaultError(str(exc)) from None


def kill(pid: int, timeout: float = TIMEOUT) -> None:
    """SIGKILL ``pid`` now; return once it has ended (a zombie until its parent reaps it),
    blocking this thread meanwhile (on an event loop: :func:`kill_async`).

    Raises:
        FaultError: it cannot be signalled.
        FaultTimeoutError: it has not ended within ``timeout`` seconds.
    """
    _send_kill(pid)
    with _as_faults():
        wait_for_process(pid, "exited", timeout)


async def kill_async(pid: int, timeout: float = TIMEOUT) -> None:
    """:func:`kill` on an event loop, which runs other tasks while it waits for the process
    to end; cancelling it stops waiting (the SIGKILL is sent).

    Raises:
        FaultError: it cannot be signalled.
        FaultTimeoutError: it has not ended within ``timeout`` seconds.
    """
    _send_kill(pid)
    with _as_faults():
        await wait_for_process_async(pid, "exited", timeout)


def _send_kill(pid: int) -> None:
    check_signallable(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class _Fault:
    """A fault applied by :meth:`apply` and undone by :meth:`undo`, also as a ``with`` block
    (undone on exit, whatever happened in it); on an event loop by :meth:`apply_async` and
    :meth:`undo_async`, which do not block it, also as an ``async with`` block. A block left
    by an exception (a cancel too) raises it, not a failure to undo, which is logged (logger
    ``tidings.chaos``) and noted on it."""

    def _undoing(self) -> str:
        """What undoing the fault does, for a log line ("continuing process 12")."""
        raise NotImplementedError

    def apply(self) -> None:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError

    async def apply_async(self) -> None:
        raise NotImplementedError

    async def undo_async(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.apply()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.undo()
        except FaultError as failure:
            if exc is None:
                raise
            self._undo_failed(exc, failure)

    async def __aenter__(self) -> Self:
        await self.apply_async()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.undo_async()
        else:  # cancelled too: undo, and let exc go on
            await self._undo_after(exc)

    async def _undo_after(self, exc: BaseException) -> None:
        """Undo the fault as ``exc`` is being raised: a failure to is logged and noted on
        ``exc``, not raised in its place."""
        try:
            await self.undo_async()
        except FaultError as failure:
            self._undo_failed(exc, failure)

    def _undo_failed(self, exc: BaseException, failure: FaultError) -> None:
        logger.error("%s failed: %s", self._undoing(), failure)
        exc.add_note(f"and {self._undoing()} failed then: {failure}")


class Stop(_Fault):
    """SIGSTOP ``pid`` on :meth:`apply`, SIGCONT on :meth:`undo` (idempotent; also on exit),
    each returning once the kernel reports it taken (within ``timeout`` seconds, else
    :class:`FaultTimeoutError`)."""

    def __init__(self, pid: int, timeout: float = TIMEOUT) -> None:
        self.pid = pid
        self.timeout = timeout
        self.stopped = False

    def apply(self) -> None:
        """Stop the process; return once every thread of it is stopped.

        Raises:
            FaultError: it cannot be signalled, or it ended instead of stopping.
            FaultTimeoutError: it is not stopped within ``timeout`` (it is continued again).
        """
        self._send_stop()
        try:
            with _as_faults():
                wait_for_process(self.pid, "stopped", self.timeout)
        except FaultError:
            with contextlib.suppress(FaultError):
                self.undo()
            raise

    def undo(self) -> None:
        """Continue the process; return once no thread of it is stopped (or it ended).

        Raises:
            FaultTimeoutError: it is still stopped after ``timeout``.
        """
        if self._send_continue():
            with _as_faults():
                wait_for_process(self.pid, "continued", self.timeout)

    async def apply_async(self) -> None:
        """:meth:`apply` on an event loop, which runs other tasks while it waits for the
        process to stop. The process is continued also when this is cancelled or stopping it
        failed; the exception is raised then, and a failure to continue it is logged (logger
        ``tidings.chaos``) and added to that exception as a note.

        Raises:
            FaultError: as :meth:`apply`.
            FaultTimeoutError: as :meth:`apply`.
        """
        self._send_stop()
        try:
            with _as_faults():
                await wait_for_process_async(self.pid, "stopped", self.timeout)
        except BaseException as exc:  # cancelled too: continue the process, then re-raise
            await self._undo_after(exc)
            raise

    async def undo_async(self) -> None:
        """:meth:`undo` on an event loop, which runs other tasks while it waits for the
        process to continue; cancelling it stops waiting (the SIGCONT is sent).

        Raises:
            FaultTimeoutError: it is still stopped after ``timeout``.
        """
        if self._send_continue():
            with _as_faults():
                await wait_for_process_async(self.pid, "continued", self.timeout)

    async def for_seconds(self, seconds: float) -> None:
        """Stop the process for ``seconds``, then continue it (:meth:`apply_async`, then
        :meth:`undo_async`: the event loop runs meanwhile). The process is continued also
        when this is cancelled or stopping it failed; the exception is raised then, and a
        failure to continue it is logged (logger ``tidings.chaos``) and added to that
        exception as a note.

        Raises:
            FaultError: as :meth:`apply`.
            FaultTimeoutError: as :meth:`apply`, or it is still stopped ``timeout`` after
                its continuing (when nothing else was raised).
        """
        await self.apply_async()
        try:
            await asyncio.sleep(seconds)
        except BaseException as exc:  # cancelled too: continue the process, then re-raise
            await self._undo_after(exc)
            raise
        await self.undo_async()

    def _undoing(self) -> str:
        return f"continuing process {self.pid}"

    def _send_stop(self) -> None:
        check_signallable(self.pid)
        _signal(self.pid, signal.SIGSTOP)  # it may have ended since the check
        self.stopped = True

    def _send_continue(self) -> bool:
        """SIGCONT the process if it was stopped: whether it was."""
        if not self.stopped:
            return False
        self.stopped = False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
        return True


_SPIN = (
    "import time,sys\n"
    "end=time.monotonic()+float(sys.argv[1])\n"
    "while time.monotonic()<end:\n"
    "    for _ in range(100000): pass\n"
)


class CpuBurn(_Fault):
    """Saturate ``cores`` cores for at most ``seconds`` (busy processes, one per core)."""

    def __init__(self, cores: int, seconds: float) -> None:
        if cores < 1:
            raise FaultError(f"cpu burn needs at least one core, not {cores!r}")
        if not seconds > 0:
            raise FaultError(f"cpu burn needs a positive duration, not {seconds!r}")
        self.cores = cores
        self.seconds = seconds
        self.processes: list[subprocess.Popen[bytes]] = []

    def apply(self) -> None:
        try:
            for _ in range(self.cores):
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _SPIN, str(self.seconds)],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        except OSError as exc:
            self.undo()
            raise FaultError(f"cannot start the CPU burners: {exc}") from exc

    def undo(self) -> None:
        """Kill the burners; return once each has ended (at most 5 s each)."""
        for process in self._kill():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_BURNER_END)

    async def apply_async(self) -> None:
        """:meth:`apply` (it starts the burners and waits for nothing)."""
        self.apply()

    async def undo_async(self) -> None:
        """:meth:`undo` on an event loop, which runs other tasks while it waits for the
        burners to end."""
        for process in self._kill():
            if process.poll() is None:  # not reaped yet: its pid is still its own
                with contextlib.suppress(TimeoutError):
                    await wait_for_process_async(process.pid, "exited", _BURNER_END)
                process.poll()  # reaps it (ended: no wait)

    def _undoing(self) -> str:
        return "killing the CPU burners"

    def _kill(self) -> list[subprocess.Popen[bytes]]:
        """SIGKILL every burner now (none is left spinning while the caller waits); they
        are no longer this fault's."""
        processes, self.processes = self.processes, []
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        return processes
