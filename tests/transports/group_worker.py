"""A consumer process for the multi-process tests.

``python group_worker.py URL PREFIX STREAM GROUP OUTFILE ACK_WAIT [STORE | exclusive]``:
subscribes to ``bench.>`` in GROUP, appends the id of every event it handles to OUTFILE
(written before the ack, so a killed worker may have handled events it never acked), prints
``ready``, and runs until SIGTERM (clean close) or SIGKILL. With STORE (an SQLite file shared
by the workers) it subscribes through a ``Bus(transport=..., store=...)`` with
``idempotent=True``, so an event another worker already handled is skipped when it is
redelivered. With ``exclusive`` the group is exclusive (4 workers, takeover after 5 s) and
each line is ``id key n attempt`` (``n`` from the payload).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import tidings
from tidings.event import Envelope
from tidings.store import SQLiteStore
from tidings.transports import DeliveryPolicy, Message
from tidings.transports.nats import NatsTransport, StreamSettings


async def main(
    url: str,
    prefix: str,
    stream: str,
    group: str,
    path: str,
    ack_wait: float,
    store_path: str | None,
) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    exclusive = store_path == "exclusive"

    async def handle(message: Message) -> None:
        env = message.envelope
        line = f"{env.id} {env.key} {env.payload['n']} {message.attempt}" if exclusive else env.id
        os.write(fd, f"{line}\n".encode())

    policy = DeliveryPolicy(ack_wait=ack_wait, prefetch=128, start="all")
    if exclusive:
        policy = DeliveryPolicy(
            ack_wait=ack_wait, prefetch=128, start="all", workers=4, exclusive=True, takeover=5.0
        )
    transport = NatsTransport(url, prefix=prefix, stream=StreamSettings(name=stream), policy=policy)
    if store_path is None or exclusive:
        async with transport:
            await transport.subscribe("bench.>", handle, group=group, policy=policy)
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            await stop.wait()
    else:

        def handle_event(envelope: Envelope[Any]) -> None:
            os.write(fd, f"{envelope.id}\n".encode())

        async with tidings.Bus(transport=transport, store=SQLiteStore(store_path)) as bus:
            bus.subscribe("bench.>", handle_event, group=group, idempotent=True, envelope=True)
            await bus.start()
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            await stop.wait()
    os.close(fd)


if __name__ == "__main__":
    url, prefix, stream, group, path, ack_wait = sys.argv[1:7]
    store = sys.argv[7] if len(sys.argv) > 7 else None
    asyncio.run(main(url, prefix, stream, group, path, float(ack_wait), store))
