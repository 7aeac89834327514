"""The load generator of the gateway's HTTP ingest benchmark, run in its own process.

A raw asyncio HTTP/1.1 client: ``connections`` keep-alive connections, each with one request
in flight at a time (a closed loop), so the generator costs one ``write`` and one response
parse per request, far less than the server under test. Bounded: it sends exactly the
bodies it is given and every read has a timeout.

Usage: ``python _gateway_load.py URL MODE COUNT CONNECTIONS FIRST [RATE]``, MODE being
``single`` (one structured CloudEvent per POST), ``batch`` (100 per POST, batch mode) or
``paced`` (single events started at RATE per second, open loop, on up to CONNECTIONS
connections); event ids are ``e{FIRST}`` on. Prints one JSON line: ``{"requests", "events", "seconds", "statuses",
"latencies_ms": [p50, p99, max]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

_TIMEOUT = 30.0
_BATCH = 100


def _event(n: int) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": f"e{n}",
        "source": "bench",
        "type": "orders.placed",
        "data": {"order_id": n, "amount": n % 500},
    }


def _request(host: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST /events HTTP/1.1\r\nhost: {host}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), _TIMEOUT)
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await asyncio.wait_for(self.reader.readexactly(length), _TIMEOUT)
        return status


async def _connect(url: str, count: int) -> list[_Connection]:
    parts = urlsplit(url)
    out = []
    for _ in range(count):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port), _TIMEOUT
        )
        out.append(_Connection(reader, writer))
    return out


async def run(
    url: str, mode: str, count: int, connections: int, first: int, rate: float
) -> dict[str, object]:
    host = urlsplit(url).netloc
    if mode == "batch":
        kind = "application/cloudevents-batch+json"
        requests = [
            _request(
                host,
                json.dumps([_event(first + r * _BATCH + i) for i in range(_BATCH)]).encode(),
                kind,
            )
            for r in range(count)
        ]
        per_request = _BATCH
    else:
        kind = "application/cloudevents+json"
        requests = [
            _request(host, json.dumps(_event(first + n)).encode(), kind) for n in range(count)
        ]
        per_request = 1
    pool = await _connect(url, connections)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    start = time.perf_counter()
    if mode == "paced":
        idle: asyncio.Queue[_Connection] = asyncio.Queue()
        for connection in pool:
            idle.put_nowait(connection)

        async def one(request: bytes, due: float) -> None:
            connection = await asyncio.wait_for(idle.get(), _TIMEOUT)
            try:
                statuses[await connection.post(request)] += 1
            finally:
                idle.put_nowait(connection)
            latencies.append(time.perf_counter() - due)  # from when it was due: no omission

        tasks = []
        for n, request in enumerate(requests):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request, due)))
        await asyncio.gather(*tasks)
    else:
        queue = iter(requests)

        async def worker(connection: _Connection) -> None:
            for request in queue:
                sent = time.perf_counter()
                statuses[await connection.post(request)] += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker(c) for c in pool))
    took = time.perf_counter() - start
    for connection in pool:
        connection.writer.close()
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return {
        "requests": len(requests),
        "events": len(requests) * per_request,
        "seconds": took,
        "statuses": {str(k): v for k, v in statuses.items()},
        "latencies_ms": [latencies[len(latencies) // 2] * 1000, p99 * 1000, latencies[-1] * 1000],
    }


def main() -> None:
    url, mode, count, connections = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    first = int(sys.argv[5])
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    print(json.dumps(asyncio.run(run(url, mode, count, connections, first, rate))), flush=True)


if __name__ == "__main__":
    main()
