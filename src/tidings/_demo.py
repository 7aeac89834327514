"""The guided tour behind ``tidings demo`` (and ``make run``).

Each step prints what it does and what happened, so the output reads as a log of the bus at
work. It needs no server: everything runs in this process.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from rich.console import Console

import tidings
from tidings import DeadLetter, Envelope
from tidings.store import SQLiteStore


@tidings.event("shop.orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    """A customer placed an order."""

    order_id: str
    amount: float


@tidings.event("shop.orders.shipped")
@dataclass(frozen=True)
class OrderShipped:
    """An order left the warehouse."""

    order_id: str


@tidings.event("warehouse.labels.requested")
@dataclass(frozen=True)
class LabelRequested:
    """A shipping label must be printed."""

    parcel: str


@tidings.event("shop.payments.failed")
@dataclass(frozen=True)
class PaymentFailed:
    """A payment was declined."""

    order_id: str


@tidings.event("demo.tour.started")
@dataclass(frozen=True)
class TourStarted:
    """The tour began, with the log this long."""

    log_length: int


def _revenue(total: float, event: OrderPlaced) -> float:
    return total + event.amount


async def _caught_up(store: SQLiteStore, consumer: str, position: int) -> None:
    """Wait (bounded) until a durable consumer has committed ``position``."""
    async with asyncio.timeout(10):
        while await store.load_checkpoint(consumer) < position:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


class _Tour:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = 0

    def section(self, title: str) -> None:
        self.step += 1
        self.console.print(f"\n[bold cyan]{self.step}. {title}[/]")

    def log(self, who: str, text: str) -> None:
        self.console.print(f"   [green]{who:<14}[/] {text}")


async def _tour(console: Console) -> int:
    tour = _Tour(console)
    console.print("[bold]tidings demo[/]: a typed event bus, in one process, no server needed")

    store = SQLiteStore()  # the default file, .tidings/events.db: it grows run after run
    started = store_time = 0
    async with tidings.Bus(source="urn:tidings:demo", store=store) as bus:
        metrics = _metrics(bus)
        started = await store.last_position()
        store_time = bus.publish(TourStarted(started)).time
        tour.section("Typed events and priorities: higher priority runs first")

        @bus.on(OrderPlaced, priority=10)
        def reserve_stock(event: OrderPlaced) -> None:
            tour.log("stock", f"reserve items for {event.order_id} (priority 10)")

        @bus.on(OrderPlaced)
        def send_receipt(event: OrderPlaced) -> None:
            tour.log("receipt", f"email receipt for {event.order_id} (priority 0)")

        bus.publish(OrderPlaced("o-1", 25.0))

        tour.section("Filters: where= sees only the events it accepts")
        bus.subscribe(
            OrderPlaced,
            lambda e: tour.log("fraud check", f"review {e.order_id}: {e.amount:.2f} > 1000"),
            where=lambda e: e.amount > 1000,
        )
        bus.publish(OrderPlaced("o-2", 40.0))
        bus.publish(OrderPlaced("o-3", 4200.0))

        tour.section("Patterns: 'shop.orders.*' and 'shop.>' match many topics")

        @bus.on("shop.>", priority=-10)
        def audit(envelope: Envelope[object]) -> None:
            tour.log("audit", f"{envelope.topic:<22} id={envelope.id[:12]}...")

        bus.publish(OrderShipped("o-1"))
        bus.publish(PaymentFailed("o-2"))

        tour.section("Async handlers: run eagerly; one that awaits finishes on the loop")

        texted: dict[str, asyncio.Event] = {}

        @bus.on(OrderShipped)
        async def notify_customer(event: OrderShipped) -> str:
            tour.log("notify", f"start texting the customer of {event.order_id}")
            await asyncio.sleep(0.01)
            tour.log("notify", f"text sent for {event.order_id}")
            texted.setdefault(event.order_id, asyncio.Event()).set()
            return "sent"

        delivery = await bus.emit(OrderShipped("o-3"))
        tour.log("emit", f"all handlers finished; results: {delivery.results}")

        tour.section("Re-entrant publishing: an event published by a handler waits its turn")

        @bus.on(OrderPlaced, where=lambda e: e.order_id == "o-4")
        def ship_at_once(event: OrderPlaced) -> None:
            tour.log("warehouse", f"{event.order_id} placed: publish OrderShipped")
            bus.publish(OrderShipped(event.order_id))
            tour.log("warehouse", "returned before OrderShipped was handled")

        bus.publish(OrderPlaced("o-4", 10.0))
        await asyncio.wait_for(texted.setdefault("o-4", asyncio.Event()).wait(), timeout=5)

        tour.section("Errors: a failing handler is isolated and lands in dead letters")
        dead: list[DeadLetter] = []

        @bus.on(DeadLetter)
        def park(letter: DeadLetter) -> None:
            dead.append(letter)
            tour.log(
                "dead letters",
                f"{letter.handler.rsplit('.', 1)[-1]} failed on {letter.envelope.topic}: "
                f"{letter.reason}",
            )

        @bus.on(PaymentFailed, priority=5)
        def flaky_refund(event: PaymentFailed) -> None:
            raise ConnectionError(f"refund service down for {event.order_id}")

        @bus.on(PaymentFailed)
        def tell_customer(event: PaymentFailed) -> None:
            tour.log("payments", f"ask the customer of {event.order_id} for another card")

        bus.publish(PaymentFailed("o-5"))

        tour.section("Backpressure: a queued subscription with workers and a bounded buffer")

        # Deterministic: each worker holds its first label until the burst is in, so the
        # burst meets full buffers the same way in every run.
        holding = threading.Semaphore(0)
        release = threading.Event()

        def label_printer(event: LabelRequested) -> None:
            holding.release()
            release.wait(5)  # a slow device

        printer = bus.subscribe(
            LabelRequested, label_printer, workers=2, maxsize=4, overflow="drop_oldest"
        )
        lanes = ("lane-1", "lane-2")  # keys that go to different workers
        for n in range(2):
            bus.publish(LabelRequested(f"parcel-{n}"), key=lanes[n % 2])
        for _ in range(2):
            await asyncio.to_thread(holding.acquire, True, 5)
        for n in range(2, 12):
            bus.publish(LabelRequested(f"parcel-{n}"), key=lanes[n % 2])
        release.set()
        await printer.drained(timeout=5)
        stats = printer.statistics()
        tour.log(
            "printer",
            f"12 labels in a burst, 2 workers busy, room for 4 more: {stats.delivered} "
            f"printed, {stats.dropped} dropped (oldest first), high-water {stats.high_water}",
        )

        tour.section("Recording: what tests assert on")
        with bus.record() as recorded:
            bus.publish(OrderPlaced("o-6", 12.5))
        placed = recorded.assert_published(OrderPlaced, count=1)
        tour.log("recorder", f"recorded {len(recorded)} event(s): {placed[0]}")

        tour.section("Durable log: every event above is in SQLite, in order, hash-chained")
        handled_now: list[str] = []
        mailer = bus.subscribe(
            OrderPlaced, lambda e: handled_now.append(e.order_id), durable="mailer"
        )
        last = await store.last_position()
        await _caught_up(store, "mailer", last)
        tour.log(
            "log",
            f"{store.path}: {last} events, {last - started} from this run",
        )
        tour.log(
            "mailer",
            f"durable consumer handled {len(handled_now)} order(s) it had not seen before "
            "(run the tour again: it resumes after its checkpoint)",
        )
        mailer.cancel()
        this_run = await bus.replay(_revenue, 0.0, topic="shop.orders.placed", since=store_time)
        all_runs = await bus.replay(_revenue, 0.0, topic="shop.orders.placed")
        tour.log("replay", f"revenue this run {this_run:.2f}, over every run {all_runs:.2f}")
        broken = await store.verify()
        tour.log("verify", "hash chain intact" if broken is None else f"BROKEN at {broken}")

        report = await bus.aclose()
        totals = bus.statistics()
    tour.section("Statistics")
    tour.log(
        "bus",
        f"delivered {totals.delivered}, failed {totals.failed}, dropped {totals.dropped}",
    )
    tour.section("Metrics: what Prometheus would scrape (tidings.observability)")
    if metrics is None:
        tour.log("metrics", "install 'tidings[prometheus]' for the metrics summary")
    else:
        for line in metrics.summary().splitlines():  # "module.handler (topic): figures"
            name, _, rest = line.partition(" (")
            tour.log(name.rsplit(".", 1)[-1], rest.partition("): ")[2])
    ok = report.clean and len(dead) == 1 and broken is None
    console.print(
        f"\n[bold]{'done' if ok else 'FAILED'}[/]: bus closed cleanly={report.clean}, "
        f"dead letters={len(dead)}"
    )
    return 0 if ok else 1


def _metrics(bus: tidings.Bus) -> Any:
    """Metrics on the tour's bus, when prometheus-client is installed."""
    try:
        from tidings.observability.metrics import Metrics
    except ImportError:
        return None
    return Metrics(bus, registry=False)


def run() -> int:
    """Run the tour, printing a readable log; return the process exit code."""
    return asyncio.run(_tour(Console(highlight=False)))
