"""The fault proxy against a real TCP echo server on loopback: each fault does what it says,
held data arrives in order exactly once after the heal, and a port in use is a FaultError."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from tidings.chaos import FaultError, FaultProxy

WAIT = 10.0


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, int]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), WAIT)


async def test_relays_both_ways_with_no_fault(echo: tuple[str, int]) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        payload = bytes(range(256)) * 4096  # 1 MiB
        writer.write(payload)
        assert await _read_exactly(reader, len(payload)) == payload
        writer.close()
        assert proxy.accepted == 1


@pytest.mark.parametrize("direction", ["upstream", "downstream", "both"])
async def test_a_partition_holds_data_and_the_heal_delivers_it_in_order(
    echo: tuple[str, int], direction: str
) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"before;")
        assert await _read_exactly(reader, 7) == b"before;"
        proxy.partition(direction)  # type: ignore[arg-type]
        for n in range(100):
            writer.write(b"%03d;" % n)
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)  # nothing comes back while held
        proxy.heal()
        expected = b"".join(b"%03d;" % n for n in range(100))
        assert await _read_exactly(reader, len(expected)) == expected
        writer.close()


async def test_a_new_connection_during_a_partition_reaches_the_server_after_the_heal(
    echo: tuple[str, int],
) -> None:
    async with FaultProxy(echo) as proxy:
        proxy.stall()
        reader, writer = await _connect(proxy)  # accepted...
        writer.write(b"hello")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)  # ...never answered
        proxy.heal()
        assert await _read_exactly(reader, 5) == b"hello"
        writer.close()


async def test_latency_delays_each_round_trip(echo: tuple[str, int]) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        proxy.latency(0.1, jitter=0.02)
        started = time.monotonic()
        writer.write(b"ping")
        assert await _read_exactly(reader, 4) == b"ping"
        assert time.monotonic() - started >= 0.2  # one delay each way
        proxy.heal()
        writer.close()


async def test_bandwidth_limits_throughput(echo: tuple[str, int]) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        proxy.bandwidth(100_000)
        started = time.monotonic()
        payload = b"x" * 50_000
        writer.write(payload)
        assert await _read_exactly(reader, len(payload)) == payload
        assert time.monotonic() - started >= 0.4  # 50 kB at 100 kB/s, twice
        writer.close()


async def test_reset_resets_open_connections(echo: tuple[str, int]) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"x")
        assert await _read_exactly(reader, 1) == b"x"
        proxy.reset()
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await _read_exactly(reader, 1)
        writer.close()
        assert not proxy.connections
        reader, writer = await _connect(proxy)  # new connections work again
        writer.write(b"y")
        assert await _read_exactly(reader, 1) == b"y"
        writer.close()


async def test_a_port_in_use_is_a_fault_error_and_nothing_listens() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proxy = FaultProxy(("127.0.0.1", 9), listen=("127.0.0.1", port))
        with pytest.raises(FaultError, match=f"cannot listen on 127.0.0.1:{port}"):
            await proxy.start()
        with pytest.raises(FaultError, match="not started"):
            _ = proxy.port


async def test_bad_fault_arguments_are_fault_errors(echo: tuple[str, int]) -> None:
    async with FaultProxy(echo) as proxy:
        with pytest.raises(FaultError, match="direction"):
            proxy.partition("sideways")  # type: ignore[arg-type]
        with pytest.raises(FaultError, match="bandwidth"):
            proxy.bandwidth(0)
        with pytest.raises(FaultError, match="latency"):
            proxy.latency(-1)


async def test_a_partition_with_close_after_resets_connections_like_a_tcp_timeout(
    echo: tuple[str, int],
) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        proxy.partition("both", close_after=0.2)
        writer.write(b"lost with the connection")
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await _read_exactly(reader, 1)
        writer.close()
        proxy.heal()
        reader, writer = await _connect(proxy)
        writer.write(b"z")
        assert await _read_exactly(reader, 1) == b"z"
        writer.close()
