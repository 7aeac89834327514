"""Ending a task of one's own from a close or stop path without taking the caller's
cancellation for the task's."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ("cancel_and_wait",)


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for its end: its own cancellation ends it quietly, an
    exception it ended with is raised. A cancellation of the caller meanwhile goes on up
    (``await task`` under ``suppress(CancelledError)`` would swallow it), the task then
    perhaps still running, cancelled: a second close finishes it."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.result()
