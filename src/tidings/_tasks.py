"""Ending tasks of one's own from a close or stop path without taking the caller's
cancellation for theirs."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ("cancel_and_wait",)


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel every one of ``tasks``, then wait for their ends: a task's own cancellation
    ends it quietly, the first exception one ended with (in the order given) is raised once
    all have ended. A cancellation of the caller meanwhile goes on up (``await task`` under
    ``suppress(CancelledError)`` would swallow it), the tasks then perhaps still running,
    but each cancelled (none is left running uncancelled for want of a wait that was cut
    short): a second close finishes them."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    await asyncio.wait(set(tasks))
    for task in tasks:
        if not task.cancelled():
            task.result()
