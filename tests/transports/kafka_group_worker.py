"""A consumer process for the Kafka multi-process test.

``python kafka_group_worker.py URL PREFIX GROUP OUTFILE``: subscribes to ``bench.>`` in
GROUP, appends ``id key n`` for every event it handles to OUTFILE (written before the
handler returns, so a killed worker may have handled events it never committed), prints
``ready`` once it holds partitions, and runs until SIGTERM (clean close) or SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from tidings.transports import DeliveryPolicy, Message
from tidings.transports.kafka import KafkaTransport


async def main(url: str, prefix: str, group: str, path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handle(message: Message) -> None:
        env = message.envelope
        os.write(fd, f"{env.id} {env.key} {env.payload['n']}\n".encode())
        await asyncio.sleep(0.0005)  # the handler's work: keeps the stream going a while

    policy = DeliveryPolicy(prefetch=128, workers=4, start="all")
    transport = KafkaTransport(
        url, prefix=prefix, partitions=4, session_timeout=3.0, metadata_refresh=0.5
    )
    async with transport:
        await transport.subscribe("bench.>", handle, group=group, policy=policy)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stop.wait()
    os.close(fd)


if __name__ == "__main__":
    url, prefix, group, path = sys.argv[1:5]
    asyncio.run(main(url, prefix, group, path))
