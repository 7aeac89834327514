"""Run a :class:`~tidings.chaos.scenario.Scenario`: real OS processes on loopback, a fault
timeline, the checker, a JSON report and a PNG plot.

Order of a run (:func:`run_scenario`):

1. everything that can be checked before starting is checked (the scenario when loaded,
   then: the nats-server binary, the output directory, the proxy's port), raising
   :class:`~tidings.chaos.ChaosError` with nothing started;
2. the broker (one nats-server or a 3-node cluster), the fault proxies (in this process,
   one per broker node; a cluster behind them does not advertise its servers to clients),
   the consumers (each waits until its subscription is live), then the publishers;
3. the fault timeline, each fault recorded as a :class:`~tidings.chaos.FaultWindow`;
4. after the workload, a wait (at most ``settle``) until every acknowledged event reached
   every consumer group; then the consumers stop cleanly;
5. the checker, the report (``report.json``), the plot (``plot.png``).

Invariant: whatever happens (a failure, a cancellation, ``KeyboardInterrupt``), every fault
is undone (proxy healed, stopped processes continued, CPU burners killed) and every process
started is stopped before :func:`run_scenario` returns or raises: :class:`_Topology` owns
each of them from the moment it exists, and its ``aclose`` runs in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidings.chaos import process as process_faults
from tidings.chaos.checker import Verdict, check
from tidings.chaos.errors import ChaosError, FaultError
from tidings.chaos.history import FaultWindow, History, HistoryWriter, read_history
from tidings.chaos.proxy import FaultProxy
from tidings.chaos.scenario import PROXY_FAULTS, FaultSpec, Scenario
from tidings.chaos.worker import STREAM
from tidings.testing.nats_server import NatsCluster, NatsServer, find_nats_server, free_port

__all__ = ("RunResult", "run_scenario")

_READY_TIMEOUT = 60.0


@dataclass
class RunResult:
    """What one run found and where it wrote it."""

    scenario: Scenario
    verdict: Verdict
    history: History
    report_path: Path
    plot_path: Path | None
    started: float
    duplicates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict.ok


class _Worker:
    """One scenario process (publisher, consumer, webhook, gateway)."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, topology: _Topology, *, wait_ready: bool = True) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        topology.workers.append(self)
        if wait_ready:
            await self.ready()

    async def ready(self) -> None:
        process = self.process
        assert process is not None
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), _READY_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ChaosError(f"{self.name} did not start within {_READY_TIMEOUT:g}s:\n{tail}")

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.process.wait(), timeout)
        return None

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGCONT (it may be stopped), SIGTERM, then SIGKILL after ``timeout``."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, 18)  # SIGCONT
            process.terminate()
        if await self.wait(timeout) is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await self.wait(5.0)


class _Topology:
    """Everything one run started; :meth:`aclose` undoes and stops all of it."""

    def __init__(self, scenario: Scenario, out: Path) -> None:
        self.scenario = scenario
        self.out = out
        self.workers: list[_Worker] = []
        self.cluster: NatsCluster | None = None
        self.server: NatsServer | None = None
        self.proxies: list[FaultProxy] = []
        """The fault proxies, one per broker node (the publishers reach the broker only
        through them); a proxy fault applies to all of them."""
        self.stops: list[process_faults.Stop] = []
        self.burns: list[process_faults.CpuBurn] = []
        self.fault_tasks: list[asyncio.Task[None]] = []
        self.windows = HistoryWriter(out / "faults.jsonl")
        self.consumers: dict[str, _Worker] = {}
        self.publishers: list[_Worker] = []
        self.closed = False

    @property
    def servers(self) -> list[NatsServer]:
        if self.cluster is not None:
            return self.cluster.servers
        return [self.server] if self.server is not None else []

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in self.fault_tasks:
            task.cancel()
        await asyncio.gather(*self.fault_tasks, return_exceptions=True)
        for proxy in self.proxies:
            proxy.heal()
        for stop in self.stops:
            # still stopped after its SIGCONT (only if stopped again meanwhile): the worker's
            # stop below continues it again and then ends it
            with contextlib.suppress(FaultError):
                await stop.undo_async()
        for burn in self.burns:
            await burn.undo_async()
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        for proxy in self.proxies:
            await proxy.aclose()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.close)
        if self.server is not None:
            await asyncio.to_thread(self.server.close)
        self.windows.close()


def _worker_argv(role: str, config: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "tidings.chaos.worker", role, json.dumps(config)]


def _preflight(scenario: Scenario, out: Path) -> None:
    try:
        find_nats_server()
    except FileNotFoundError as exc:
        raise FaultError(str(exc)) from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise FaultError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    needed = ("typer", "uvicorn", "starlette", "httpx")
    if scenario.workload.gateway and not all(importlib.util.find_spec(m) for m in needed):
        raise FaultError(
            "the gateway scenario needs the tidings command: pip install 'tidings[cli,gateway]'"
        )


async def run_scenario(
    scenario: Scenario,
    out: Path,
    *,
    proxy_port: int = 0,
    plot: bool = True,
    log: Any = None,
) -> RunResult:
    """Run ``scenario``, writing ``history/``, ``report.json`` and ``plot.png`` under ``out``.

    Raises:
        FaultError: a fault cannot be applied (port in use, no nats-server...), raised
            before anything starts.
        ChaosError: a process of the topology did not start; everything started is stopped.
    """
    say = log or (lambda message: None)
    out = Path(out)
    _preflight(scenario, out)
    for stale in out.glob("*.jsonl"):
        stale.unlink()
    for stale in out.glob("*.db*"):
        stale.unlink()
    topology = _Topology(scenario, out)
    try:
        # The proxies first: a port in use fails before any process starts.
        via_proxy = scenario.workload.via_proxy
        if scenario.nodes == 3:
            # Behind proxies the cluster does not advertise its servers to clients
            # (no_advertise): a client would reconnect to one directly, around the proxy.
            topology.cluster = NatsCluster(3, name="tidings-chaos", advertise=not via_proxy)
        else:
            topology.server = NatsServer(name="chaos")
        if via_proxy:
            port = proxy_port or scenario.proxy_port
            for index, upstream in enumerate(topology.servers):
                proxy = FaultProxy(
                    ("127.0.0.1", upstream.port), listen=("127.0.0.1", port if index == 0 else 0)
                )
                await proxy.start()
                topology.proxies.append(proxy)
        say(f"starting nats-server ({scenario.nodes} node(s))")
        if topology.cluster is not None:
            await asyncio.to_thread(topology.cluster.start)
        else:
            assert topology.server is not None
            await asyncio.to_thread(topology.server.start)
        return await _run(topology, say, plot)
    finally:
        await asyncio.shield(topology.aclose())


async def _run(topology: _Topology, say: Any, plot: bool) -> RunResult:
    scenario, out = topology.scenario, topology.out
    urls = [s.url for s in topology.servers]
    replicas = 3 if scenario.nodes == 3 else 1
    base = {"replicas": replicas, "settle": scenario.settle}
    for spec in scenario.consumers:
        for index in range(spec.processes):
            name = f"consumer:{spec.name}:{index}"
            config = {
                **base,
                "servers": urls,
                "name": name,
                "group": spec.name,
                "history": str(out / f"{name.replace(':', '-')}.jsonl"),
                "ledger": str(out / f"ledger-{spec.name}.db") if spec.ledger else None,
                "exclusive": spec.exclusive,
                "handler_faults": list(spec.handler_faults),
            }
            worker = _Worker(name, _worker_argv("consumer", config), out / "processes.log")
            say(f"starting {name}")
            await worker.start(topology)
            topology.consumers[name] = worker
    gateway_url = None
    if scenario.workload.gateway:
        gateway_url = await _start_gateway(topology, urls, say)
    wl = scenario.workload
    publisher_urls = [f"nats://{proxy.address}" for proxy in topology.proxies] or urls
    configs = []
    for index in range(wl.publishers):
        name = f"publisher:{index}"
        config = {
            **base,
            "servers": publisher_urls,
            "name": name.replace(":", "-"),
            "history": str(out / f"publisher-{index}.jsonl"),
            "store": str(out / f"outbox-{index}.db"),
            "forward": wl.forward,
            "rate": wl.rate / wl.publishers,
            "keys": wl.keys,
            "duration": wl.duration,
            "gateway": gateway_url,
        }
        configs.append(config)
    role = "http-publisher" if gateway_url else "publisher"
    starts = [
        _Worker(f"publisher:{i}", _worker_argv(role, c), out / "processes.log")
        for i, c in enumerate(configs)
    ]
    for worker in starts:
        await worker.start(topology, wait_ready=False)
    await asyncio.gather(*(w.ready() for w in starts))
    topology.publishers = starts
    started = time.time()
    say(f"workload: {wl.rate:g}/s over {wl.keys} keys for {wl.duration:g}s")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for fault in scenario.faults:
        topology.fault_tasks.append(asyncio.create_task(_apply(topology, fault, t0, configs, say)))
    # The publishers end on their own (a forwarding one once its log is forwarded).
    limit = wl.duration + scenario.settle + 30.0
    for worker in starts:
        if await worker.wait(max(limit - (loop.time() - t0), 1.0)) is None:
            say(f"{worker.name} did not finish in time; stopping it")
    outcomes = await asyncio.gather(*topology.fault_tasks, return_exceptions=True)
    failed = [
        f"{fault.kind} {fault.target} (line {fault.line}): {outcome}"
        for fault, outcome in zip(scenario.faults, outcomes, strict=True)
        if isinstance(outcome, Exception)
    ]
    if failed:  # the run did not test what the scenario says: no verdict
        raise FaultError("fault(s) could not be applied during the run: " + "; ".join(failed))
    say("workload done; waiting for convergence")
    handlers = ["webhook"] if gateway_url else [c.name for c in scenario.consumers]
    await _converge(out, handlers, scenario.settle)
    for worker in list(topology.workers):
        if worker in topology.consumers.values() or worker.name.startswith("webhook"):
            await worker.stop()
    history = await asyncio.to_thread(_read, out)
    effects = _effects(out, scenario)
    verdict = check(history, scenario.mode, handlers=handlers, effects=effects)
    return _report(topology, history, verdict, started, plot)


async def _start_gateway(topology: _Topology, urls: list[str], say: Any) -> str:
    scenario, out = topology.scenario, topology.out
    port = free_port()
    hook = _Worker(
        "webhook",
        _worker_argv(
            "webhook",
            {
                "port": port,
                "delay": scenario.webhook_delay or 0.0,
                "name": "webhook",
                "history": str(out / "webhook.jsonl"),
            },
        ),
        out / "processes.log",
    )
    say("starting the slow webhook target")
    await hook.start(topology)
    listen = free_port()
    config = out / "gateway.yaml"
    config.write_text(
        f"store: sqlite:///{out / 'gateway.db'}\n"
        "drain_timeout: 5s\n"
        f"http: {{listen: 127.0.0.1:{listen}}}\n"
        "routes:\n"
        "  - name: to-webhook\n"
        "    from: chaos.>\n"
        "    to:\n"
        f"      - webhook: http://127.0.0.1:{port}/hook\n"
        "        timeout: 5s\n"
        "        retry: {max_attempts: 50, backoff: 100ms}\n",
        encoding="utf-8",
    )
    argv = [sys.executable, "-m", "tidings.cli", "serve", str(config)]
    gateway = _Worker("gateway", argv, out / "processes.log")
    say("starting the gateway (tidings serve)")
    await gateway.start(topology, wait_ready=False)
    url = f"http://127.0.0.1:{listen}"
    await _wait_http(url + "/readyz", gateway)
    return url


async def _wait_http(url: str, worker: _Worker) -> None:
    import urllib.request

    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if not worker.running:
            raise ChaosError(f"{worker.name} exited: see {worker.log}")
        try:
            await asyncio.to_thread(urllib.request.urlopen, url, None, 1.0)
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise ChaosError(f"{worker.name} did not answer {url} within {_READY_TIMEOUT:g}s")


async def _converge(out: Path, handlers: list[str], settle: float) -> None:
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        history = await asyncio.to_thread(_read, out)
        acked = {p.id for p in history.published if p.outcome == "ok"}
        seen = Counter(
            d.handler
            for d in {(d.handler, d.id): d for d in history.delivered if d.id in acked}.values()
        )
        if all(seen[h] >= len(acked) for h in handlers):
            return
        await asyncio.sleep(0.25)


def _read(out: Path) -> History:
    return read_history(sorted(out.glob("*.jsonl")))


def _effects(out: Path, scenario: Scenario) -> dict[str, int] | None:
    ledgers = [out / f"ledger-{c.name}.db" for c in scenario.consumers if c.ledger]
    if not ledgers:
        return None
    effects: Counter[str] = Counter()
    for path in ledgers:
        if not path.exists():
            continue
        with contextlib.closing(sqlite3.connect(path)) as db:
            for (event_id,) in db.execute("SELECT event_id FROM charges"):
                effects[event_id] += 1
    return dict(effects)


async def _apply(
    topology: _Topology, fault: FaultSpec, t0: float, configs: list[dict[str, Any]], say: Any
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(t0 + fault.at - loop.time(), 0.0))
    start = time.time()
    say(f"fault: {fault.kind} {fault.target} for {fault.duration or 0:g}s")
    try:
        await _fault(topology, fault, configs)
    finally:
        topology.windows.fault(FaultWindow(f"{fault.kind} {fault.target}", start, time.time()))


async def _fault(topology: _Topology, fault: FaultSpec, configs: list[dict[str, Any]]) -> None:
    kind, duration = fault.kind, fault.duration or 0.0
    if kind in PROXY_FAULTS:
        for proxy in topology.proxies:
            _proxy_fault(proxy, fault)
        if kind == "reset":
            return
        try:
            await asyncio.sleep(duration)
        finally:
            for proxy in topology.proxies:
                proxy.heal()
        return
    if kind == "cpu":
        burn = process_faults.CpuBurn(fault.cores, duration)
        topology.burns.append(burn)
        await burn.apply_async()
        try:
            await asyncio.sleep(duration)
        finally:
            await burn.undo_async()
        return
    target = fault.target
    if target.startswith("broker:"):
        server = await _broker(topology, target)
        await asyncio.to_thread(server.kill)
        if fault.duration is not None:
            await asyncio.sleep(duration)
            await asyncio.to_thread(server.restart)
        return
    worker = await _target_worker(topology, target)
    if kind == "stop":
        stop = process_faults.Stop(worker.pid)
        topology.stops.append(stop)
        await stop.for_seconds(duration)
        return
    await process_faults.kill_async(worker.pid)
    await worker.wait(10.0)
    if fault.duration is None:
        return
    await asyncio.sleep(duration)
    argv = list(worker.argv)
    if target.startswith("publisher:"):  # back only to forward what its log still holds
        config = json.loads(argv[-1])
        config["duration"] = 0.0
        config["rate"] = 1.0
        config["resume"] = True
        argv[-1] = json.dumps(config)
    again = _Worker(worker.name, argv, worker.log)
    await again.start(topology)
    if worker in topology.consumers.values():
        topology.consumers[worker.name] = again


def _proxy_fault(proxy: FaultProxy, fault: FaultSpec) -> None:
    """Apply ``fault`` (one of :data:`PROXY_FAULTS`) to ``proxy``."""
    kind, direction = fault.kind, fault.direction
    if kind == "reset":
        proxy.reset()
    elif kind == "partition":
        proxy.partition(direction)  # type: ignore[arg-type]
    elif kind == "stall":
        proxy.stall()
    elif kind == "latency":
        proxy.latency(fault.latency, fault.jitter)
    elif kind == "bandwidth":
        proxy.bandwidth(fault.bytes_per_second)
    elif kind == "timeout":
        proxy.timeout(fault.timeout, direction)  # type: ignore[arg-type]
    elif kind == "limit_data":
        proxy.limit_data(fault.limit, direction)  # type: ignore[arg-type]
    elif kind == "slow_close":
        proxy.slow_close(fault.delay)


async def _target_worker(topology: _Topology, target: str) -> _Worker:
    """The process ``target`` names, its latest incarnation first and a running one before
    one that ended. ``consumer:GROUP:active`` is the group's process that delivered last;
    when that one is down (an earlier fault killed it and its restart has not begun yet),
    the group's latest running process instead."""
    group = None
    if target.endswith(":active"):
        group = target.split(":")[1]
        history = await asyncio.to_thread(_read, topology.out)  # not on the event loop
        latest = max(
            (d for d in history.delivered if d.handler == group),
            key=lambda d: d.time,
            default=None,
        )
        target = latest.process if latest is not None else f"consumer:{group}:0"
    named = [worker for worker in reversed(topology.workers) if worker.name == target]
    running = [worker for worker in named if worker.running]
    if running:
        return running[0]
    if group is not None:
        members = f"consumer:{group}:"
        for worker in reversed(topology.workers):
            if worker.running and worker.name.startswith(members):
                return worker
    if named:
        return named[0]
    raise FaultError(f"no process {target!r} in this run")


async def _broker(topology: _Topology, target: str) -> NatsServer:
    index = target.split(":")[1]
    if index != "leader":
        return topology.servers[int(index)]
    import nats

    assert topology.cluster is not None
    nc = await nats.connect([s.url for s in topology.servers])
    try:
        info = await nc.jetstream().stream_info(STREAM)
        leader = info.cluster.leader if info.cluster is not None else None
    finally:
        await nc.close()
    if leader is None:
        raise FaultError(f"stream {STREAM} has no leader to kill")
    return topology.cluster.server_named(leader)


def _report(
    topology: _Topology, history: History, verdict: Verdict, started: float, plot: bool
) -> RunResult:
    scenario, out = topology.scenario, topology.out
    report = {
        "scenario": scenario.name,
        "file": scenario.file,
        "mode": scenario.mode,
        "workload": {
            "rate": scenario.workload.rate,
            "keys": scenario.workload.keys,
            "duration": scenario.workload.duration,
            "publishers": scenario.workload.publishers,
            "forward": scenario.workload.forward,
        },
        "faults": [
            {"name": f.name, "start": round(f.start - started, 3), "end": round(f.end - started, 3)}
            for f in sorted(history.faults, key=lambda f: f.start)
        ],
        "verdict": verdict.to_json(),
    }
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_path = None
    if plot:
        from tidings.chaos.plot import plot_history

        plot_path = plot_history(history, out / "plot.png", title=scenario.name, start=started)
    return RunResult(
        scenario,
        verdict,
        history,
        report_path,
        plot_path,
        started,
        duplicates=sum(verdict.duplicates.values(), 0),
    )
