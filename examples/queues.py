"""A slow handler on its own bounded queue and workers, a batch handler and a shared
weighted pool, fed from a thread: ``python examples/queues.py``.
Needs only ``pip install tidings``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import tidings


@tidings.event("clicks")
@dataclass(frozen=True)
class Click:
    user: str
    page: int


async def main() -> None:
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()
    batches: list[int] = []

    async with tidings.Bus() as bus:  # leaving it waits for every queue to drain

        @bus.on(Click, workers=4, maxsize=100, overflow="block")
        def store_click(click: Click) -> None:  # slow: 1 ms per click, four at a time
            time.sleep(0.001)
            with lock:
                seen.setdefault(click.user, []).append(click.page)

        @bus.on(Click, batch=tidings.Batch(max_size=64, max_wait=0.01))
        def count(clicks: list[Click]) -> None:
            batches.append(len(clicks))

        pool = tidings.WorkerPool(2)
        bus.subscribe(Click, lambda click: None, pool=pool, weight=3)
        bus.subscribe(Click, lambda click: None, pool=pool, weight=1)

        def produce() -> None:  # publish from any thread; "block" waits here when full
            for n in range(200):
                bus.publish(Click(f"user{n % 5}", n), key=f"user{n % 5}")

        await asyncio.to_thread(produce)
    for user, pages in sorted(seen.items()):
        assert pages == sorted(pages), user  # one key's events stay in order
        print(user, len(pages), "clicks, in order")
    print("batches:", len(batches), "events:", sum(batches))
    assert sum(len(p) for p in seen.values()) == sum(batches) == 200


if __name__ == "__main__":
    asyncio.run(main())
