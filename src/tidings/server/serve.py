"""Running the gateway service: :func:`serve` (what ``tidings serve`` calls).

Start-up: load and validate the config (a :class:`~tidings.gateway.ConfigError` is printed
with every problem and the exit status is 2), open the store (and the transport: one that
cannot be reached within its connect timeout is one line on stderr and exit status 1), start
the gateway (readiness follows), listen, print the URLs and a ready-to-paste ``curl``.

Stop (SIGINT or SIGTERM, once): intake stops (the listener closes, requests in progress
finish), the gateway drains what was accepted within ``drain_timeout``, the bus closes, and
the process exits 0. SIGHUP reloads the config from its files.

The HTTP parser and event loop are the fastest installed: ``httptools`` and ``uvloop`` (both
in the ``gateway`` extra) when importable, else uvicorn's pure-Python ``h11`` and asyncio's
own loop; the behaviour is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib.util
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import uvicorn

from tidings.bus import Bus
from tidings.exceptions import TidingsError
from tidings.gateway.config import ConfigError, GatewayConfig, load_config, parse_listen
from tidings.gateway.runner import Gateway
from tidings.server.access import Access
from tidings.server.app import create_app

__all__ = ("example_curl", "http_implementation", "loop_factory", "serve", "stream_curl")

_SAMPLE = (
    '{"specversion":"1.0","id":"hello-1","source":"curl","type":"orders.placed",'
    '"data":{"order_id":"A-1","amount":250,"card_number":"4111111111111111"}}'
)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def http_implementation() -> str:
    """uvicorn's HTTP/1.1 implementation: ``httptools`` when installed, else ``h11``."""
    return "httptools" if _installed("httptools") else "h11"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop``'s loop when installed (not on Windows), else ``None`` (asyncio's)."""
    if sys.platform == "win32" or not _installed("uvloop"):
        return None
    import uvloop

    return uvloop.new_event_loop


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve` handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _authorization(config: GatewayConfig) -> list[str]:
    """curl arguments sending the first configured token (none when the gateway is open)."""
    for token in config.http.tokens:
        secret = os.environ.get(token.token_env)
        if secret:
            return ["-H", f"authorization: Bearer {secret}"]
    return []


def example_curl(url: str, config: GatewayConfig) -> str:
    """A curl command posting a sample event to ``url`` (with a token when one is needed)."""
    parts = ["curl", "-i", "-X", "POST", f"{url}/events"]
    parts += ["-H", "content-type: application/cloudevents+json", *_authorization(config)]
    parts += ["-d", _SAMPLE]
    return " ".join(shlex.quote(p) for p in parts)


def stream_curl(url: str, config: GatewayConfig) -> str:
    """A curl command following every event of the log as server-sent events."""
    parts = ["curl", "-N", f"{url}/events?topic=>&after=0", *_authorization(config)]
    return " ".join(shlex.quote(p) for p in parts)


async def _run(paths: Sequence[str], config: GatewayConfig, out: TextIO) -> int:
    transport: Any = None
    if config.transport is not None and config.transport.startswith("kafka://"):
        from tidings.transports.kafka import KafkaTransport

        transport = KafkaTransport(config.transport)
    elif config.transport is not None:
        from tidings.transports.nats import NatsTransport

        transport = NatsTransport(config.transport)
    store_url = config.store
    if store_url.startswith("sqlite:///"):
        folder = os.path.dirname(store_url[len("sqlite:///") :])
        if folder:
            os.makedirs(folder, exist_ok=True)
    bus = Bus(source="tidings-gateway", store=store_url, transport=transport)
    try:
        await bus.start()
    except TidingsError as exc:  # the store or the transport cannot be reached: say so, once
        await bus.aclose()
        print(f"tidings serve: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    gateway = Gateway(bus, config, paths=paths)
    app = create_app(gateway, Access(config.http.tokens, config.http.rate_limit))
    server = _Server(
        uvicorn.Config(
            app,
            host=config.http.host,
            port=config.http.port,
            log_level="warning",
            lifespan="off",
            http=http_implementation(),
            timeout_graceful_shutdown=2,
        )
    )
    await gateway.start()
    # Everything built so far (modules, the app, the first table) lives as long as the
    # process: freezing it keeps the collector's full passes short, which are otherwise the
    # longest pauses of the loop (tens of ms, e.g. during a reload's compile).
    gc.freeze()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        server.should_exit = True
        stopping.set()

    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = loop.create_task(gateway.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    if hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, reload)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.02)
    if serving.done():
        await gateway.stop(1)
        await bus.aclose()
        serving.result()
        return 1
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    url = f"http://{host}:{port}"
    where = ", ".join(paths) if paths else "the embedded default"
    print(f"tidings gateway serving {url}  (config: {where}, generation 1)", file=out)
    print(f"  console: {url}/  (open it in a browser)", file=out)
    print(f"  health:  {url}/healthz   ready: {url}/readyz", file=out)
    print(f"  config:  {url}/config   metrics: {url}/metrics   api: {url}/openapi.json", file=out)
    print(f"  follow the log (server-sent events): {stream_curl(url, config)}", file=out)
    print("  post an event:", file=out)
    print(f"    {example_curl(url, config)}", file=out)
    print("Ctrl-C stops (drains what was accepted, then exits 0).", file=out, flush=True)
    await serving
    drained = await gateway.stop()
    await bus.aclose()
    print(
        "tidings gateway stopped" + ("" if drained else " (drain timed out)"), file=out, flush=True
    )
    return 0


def serve(
    paths: Sequence[str] = (), *, listen: str | None = None, out: TextIO | None = None
) -> int:
    """Run the gateway on ``paths`` (files or directories; none: the embedded default)
    until SIGINT/SIGTERM; return the exit status (see the module docstring).

    ``listen`` (``host:port``) overrides the config's ``http.listen``.
    """
    stream = sys.stdout if out is None else out
    try:
        config = load_config(paths)
        if listen is not None:
            host, port = parse_listen(listen)
            config = dataclasses.replace(
                config, http=dataclasses.replace(config.http, host=host, port=port)
            )
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"tidings serve: --listen: {exc}", file=sys.stderr)
        return 2
    try:
        Access(config.http.tokens, config.http.rate_limit)
    except ValueError as exc:
        print(f"tidings serve: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_run(paths, config, stream))
