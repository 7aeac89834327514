"""The fault proxy against a real TCP echo server on loopback: each fault does what it says,
held data arrives in order exactly once after the heal, and a port in use is a FaultError."""

from __future__ import annotations

import asyncio
import contextlib
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


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the connection closes (EOF, or a reset after some data)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), WAIT):
            chunks.append(chunk)
    return b"".join(chunks)


async def _relays(proxy: FaultProxy, payload: bytes) -> None:
    """A new connection through ``proxy`` carries ``payload`` to the echo server and back."""
    reader, writer = await _connect(proxy)
    writer.write(payload)
    assert await _read_exactly(reader, len(payload)) == payload
    writer.close()


async def test_timeout_drops_data_then_closes_each_connection(echo: tuple[str, int]) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        proxy.timeout(0.3)
        started = time.monotonic()
        writer.write(b"dropped")
        assert await _read_to_eof(reader) == b""  # nothing came back, then the close
        assert time.monotonic() - started >= 0.25
        writer.close()
        reader, writer = await _connect(proxy)  # opened during the fault: closed too
        writer.write(b"dropped too")
        assert await _read_to_eof(reader) == b""
        writer.close()
        proxy.heal()
        await _relays(proxy, b"kept")


async def test_timeout_zero_drops_data_until_the_heal_and_keeps_the_connection(
    echo: tuple[str, int],
) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        proxy.timeout(0, "upstream")
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        proxy.heal()
        writer.write(b"kept")
        assert await _read_exactly(reader, 4) == b"kept"  # the dropped bytes never come
        writer.close()


async def test_limit_data_closes_a_connection_after_that_many_bytes(
    echo: tuple[str, int],
) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"before")
        assert await _read_exactly(reader, 6) == b"before"  # counted from the fault on
        proxy.limit_data(10, "downstream")
        writer.write(b"0123456789abcdefghijklmno")
        assert await _read_to_eof(reader) == b"0123456789"
        writer.close()
        proxy.heal()
        await _relays(proxy, b"0123456789abcdefghijklmno")


async def test_limit_data_upstream_lets_the_server_see_that_many_bytes() -> None:
    received: list[bytes] = []
    closed = asyncio.Event()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await _read_to_eof(reader))
        writer.close()
        closed.set()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    async with server, FaultProxy(("127.0.0.1", server.sockets[0].getsockname()[1])) as proxy:
        proxy.limit_data(10, "upstream")
        reader, writer = await _connect(proxy)
        writer.write(b"0123456789abcdefghijklmno")
        await asyncio.wait_for(closed.wait(), WAIT)
        assert received == [b"0123456789"]
        assert await _read_to_eof(reader) == b""  # the client's side is closed too
        writer.close()


async def test_slow_close_delays_the_close_of_the_other_side() -> None:
    async def answer_once_and_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(await reader.read(1))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_once_and_close, "127.0.0.1", 0)
    async with server, FaultProxy(("127.0.0.1", server.sockets[0].getsockname()[1])) as proxy:
        for delay in (0.0, 0.4):
            proxy.slow_close(delay)
            reader, writer = await _connect(proxy)
            writer.write(b"x")
            assert await _read_exactly(reader, 1) == b"x"
            answered = time.monotonic()
            assert await _read_to_eof(reader) == b""
            elapsed = time.monotonic() - answered
            assert elapsed >= delay * 0.9 if delay else elapsed < 0.3
            writer.close()


async def test_bad_toxic_arguments_are_fault_errors(echo: tuple[str, int]) -> None:
    async with FaultProxy(echo) as proxy:
        with pytest.raises(FaultError, match="timeout"):
            proxy.timeout(-1)
        with pytest.raises(FaultError, match="direction"):
            proxy.timeout(1, "sideways")  # type: ignore[arg-type]
        with pytest.raises(FaultError, match="limit_data"):
            proxy.limit_data(-1)
        with pytest.raises(FaultError, match="slow_close"):
            proxy.slow_close(-0.5)
