"""The gateway runner: accept events into the log, route them from it, reload the table.

:class:`Gateway` attaches a route table to a :class:`tidings.Bus` that has a store (an
application can run the same routes in-process on its own bus; ``tidings serve`` is a thin
HTTP layer over this class).

Guarantees:

- **Durable before acknowledged.** :meth:`Gateway.accept` returns once the events are
  appended to the store. The store is idempotent on the event id, so accepting the same
  event again (a retried POST) stores and routes it once. An id the log already holds from
  another *source* is refused (:class:`EventIdConflictError`), never taken for a retry:
  positions not above the highest one seen before the append are read back to compare
  sources (new events, above it, cost nothing more).
- **Group commit.** Concurrent :meth:`accept` calls (the POSTs being served together) are
  appended in one store call, one transaction: the events of calls that arrive while the
  loop is busy wait for the next such group, so a busy gateway pays one transaction per
  group rather than per request. Each call still returns only once its own events are
  durable, with its own positions. Calls sharing an event id never share a group (the later
  one waits for the next, where its id is recognised as stored). When a group's append
  fails, each of its calls is appended alone (appends are idempotent; the failed
  transaction stored nothing), so a call fails only by its own append, and its error is
  exactly what the store raised.
- **One router per log.** Replicas may share a store: each accepts into the shared log,
  and only the holder of the store's routing lease (:mod:`tidings.gateway.lease`) follows
  and routes it, so each accepted event is routed once by the group, wherever it was
  accepted. A standby takes the lease over when the holder stops or dies and resumes from
  the shared checkpoint.
- **One routing path.** A single follower task reads the log in position order
  (:meth:`EventStore.subscribe`) and routes every record once; the consumer's checkpoint
  (``consumer`` name) is committed only up to the last position whose deliveries have all
  finished (every 64 records, at most once per 5 ms: under load, few write transactions),
  so after a crash every accepted event is routed again from the log: at least once; those
  routed since the last commit (64 records, or what 5 ms of routing covered, more under
  load) are routed twice. Events the gateway itself publishes (topic targets, dead
  letters, rejected configs) go through the log too, and are routed like the rest.
- **The table in force when accepted.** :meth:`accept` notes the table current at that
  moment for each event, and the follower routes the event by that table, even if a reload
  swapped tables since. Events found in the log with no such note (after a restart, or
  appended by someone else) are routed by the current table.
- **Atomic reloads.** A reload applies ``routes`` and ``drain_timeout``; ``http``, ``store``
  and ``transport`` are read at start (a change to them is logged as needing a restart).
  A reload parses and validates the whole config off the event loop,
  builds a new table, and swaps it in one assignment. An invalid config changes nothing:
  the error is kept (:attr:`Gateway.last_error`), logged, counted
  (``reloads[("rejected")]``) and published as a ``tidings.gateway.config_rejected`` event.
- **Drain.** :meth:`Gateway.stop` stops when everything accepted before it was routed and
  delivered, or at the timeout, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import gc
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tidings._tasks import cancel_and_wait
from tidings.exceptions import TidingsError
from tidings.gateway.brokers import Brokers
from tidings.gateway.config import ConfigError, GatewayConfig, load_config
from tidings.gateway.dead_letter_index import DeadLetterIndex
from tidings.gateway.dead_letters import REDRIVE_TOPIC, dead_letter_topics, redrive_dispatch
from tidings.gateway.lease import routing_lease
from tidings.gateway.stats import RouteStats, TargetOutcome
from tidings.gateway.table import Dispatch, RouteTable
from tidings.gateway.targets import Sender

if TYPE_CHECKING:
    from tidings.bus import Bus
    from tidings.event import Envelope
    from tidings.store.base import EventStore
    from tidings.store.records import StoredEvent

__all__ = ("CONFIG_REJECTED_TOPIC", "EventIdConflictError", "Gateway", "RoutedHook")

logger = logging.getLogger("tidings.gateway")

CONFIG_REJECTED_TOPIC = "tidings.gateway.config_rejected"
"""The topic of the event a rejected reload publishes."""

RoutedHook = Callable[["StoredEvent", RouteTable, list[Dispatch]], None]
"""``on_routed(record, table, dispatches)``: called once per routed record."""

_MAX_IN_FLIGHT = 256
_FOLLOW_RETRY_FIRST = 0.05
_FOLLOW_RETRY_MAX = 5.0
_RELOAD_SWITCH_INTERVAL = 0.001  # seconds: the GIL switch interval while a reload runs
_COMMIT_EVERY = 64  # records routed between checkpoint commits (re-routed after a crash)
# ... and at least this many seconds between them: under load, a commit (a write transaction)
# every 5 ms rather than every 64 records (re-routed after a crash: 64 records or 5 ms of them)
_COMMIT_INTERVAL = 0.005


class EventIdConflictError(TidingsError, ValueError):
    """Event ids already in the log from another source: ``conflicts`` lists
    ``(id, source, stored source)``; ``accepted`` the ids of the batch that were stored."""

    def __init__(
        self,
        conflicts: Sequence[tuple[str, str, str]],
        envelopes: Sequence[Envelope[Any]],
        positions: Sequence[int],
    ) -> None:
        self.conflicts = list(conflicts)
        refused = {c[0] for c in conflicts}
        self.accepted = [e.id for e in envelopes if e.id not in refused]
        self.positions = [
            p for e, p in zip(envelopes, positions, strict=True) if e.id not in refused
        ]
        listed = "; ".join(f"id {i!r} of {s!r} is taken by {o!r}" for i, s, o in conflicts)
        super().__init__(
            f"{listed}: the log keys events by id, so ids must be unique across sources; "
            "send these events with new ids"
        )


class Gateway:
    """Routes the events of ``bus``'s log by a hot-reloadable route table.

    Args:
        bus: a bus created with a store; the gateway appends to and follows that store.
        config: the config to start with.
        paths: the files or directories it was loaded from (what :meth:`reload` and
            :meth:`watch` read).
        watch: whether :meth:`start` also starts :meth:`watch` (reload on every change of
            ``paths``); ``False``: only calls to :meth:`reload` reload.
        consumer: the checkpoint name in the store.
        on_routed: called for every routed record (tests, audit).
    """

    def __init__(
        self,
        bus: Bus,
        config: GatewayConfig,
        *,
        paths: Sequence[str | os.PathLike[str]] = (),
        watch: bool = True,
        consumer: str = "tidings-gateway",
        on_routed: RoutedHook | None = None,
    ) -> None:
        store = bus.store
        if store is None:
            raise ValueError("the gateway follows a log: create the bus with Bus(store=...)")
        self.bus = bus
        self.store: EventStore = store
        self.paths = tuple(Path(p) for p in paths)
        self._watches = watch
        self.consumer = consumer
        self._table = RouteTable.build(config, 1)
        self.previous: RouteTable | None = None  # the last table whose config differed
        self.stats = RouteStats()
        # every dead-letter topic of every table since start (a reload may remove a route
        # whose dead letters are still to be redriven or discarded)
        self.dead_letter_topics = set(dead_letter_topics(self._table))
        # every dead letter in the log, read when first asked for (the console)
        self.dead_letters = DeadLetterIndex(store)
        self.started_at = _dt.datetime.now(_dt.UTC)  # when the figures (stats) count from
        self._on_routed = on_routed
        self._pending: dict[str, RouteTable] = {}
        self._client = httpx.AsyncClient()
        self.brokers = Brokers(self.accept, EventIdConflictError)
        self.sender = Sender(bus, self._client, self.brokers)
        self.last_error: str | None = None
        self.last_error_at: _dt.datetime | None = None
        self.reloads: Counter[str] = Counter()
        self.accepted = 0
        self.routed = 0
        self._routed_position = 0
        self._high_water = 0  # the highest position an append has returned (or the log's end)
        self._group: list[_Intake] = []  # accept calls waiting for the next grouped append
        self._appender: asyncio.Task[None] | None = None
        self._committed = 0
        self._committed_at = 0.0  # time.monotonic() of the last checkpoint commit by the follower
        self._in_flight: dict[int, int] = {}  # position: dispatches left; in position order
        self._tasks: set[asyncio.Task[None]] = set()
        # dispatches that may still start (of _MAX_IN_FLIGHT); only the follower takes one,
        # waiting on _room when none is free (a counter: asyncio.Semaphore costs more)
        self._free_slots = _MAX_IN_FLIGHT
        self._room: asyncio.Future[None] | None = None
        self._batch_topics = self.sender.batches_topics
        self._lane: list[tuple[int, Dispatch]] = []  # topic dispatches to publish together
        self._lane_task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._progress_waiters = 0  # wait_routed calls waiting: progress is signalled only then
        self._follower: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stop_watching = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._lease = routing_lease(store, consumer)
        self._started = False

    @property
    def ready(self) -> bool:
        """Whether the gateway follows its log (started, not stopping, follower alive)."""
        follower = self._follower
        return self._started and follower is not None and not follower.done()

    # -- the table --------------------------------------------------------------------------

    @property
    def routing(self) -> bool:
        """Whether this gateway holds the routing lease (routes the log; see
        :mod:`tidings.gateway.lease`); a standby only accepts."""
        return self._lease.held

    @property
    def table(self) -> RouteTable:
        """The route table in force."""
        return self._table

    def install(self, config: GatewayConfig) -> RouteTable:
        """Build a table from ``config`` and swap it in; return it."""
        return self._swap(RouteTable.build(config, self._table.generation + 1))

    def _swap(self, table: RouteTable) -> RouteTable:
        before = self._table.config
        if (table.config.http, table.config.store, table.config.transport) != (
            before.http,
            before.store,
            before.transport,
        ) or table.config.broker_sources != before.broker_sources:
            logger.warning(
                "the reloaded config changes http, store, transport or sources: those take "
                "effect when the gateway is restarted; routes and drain_timeout apply now"
            )
        if table.config != self._table.config:
            self.previous = self._table
        self.dead_letter_topics.update(dead_letter_topics(table))
        self._table = table
        self.reloads["accepted"] += 1
        self.last_error = None
        logger.info("gateway config generation %d loaded", table.generation)
        return table

    async def reload(self) -> bool:
        """Reload the config from :attr:`paths`; return whether it was accepted.

        Reading, validating and compiling run in a worker thread, so intake goes on; the
        swap is one assignment on the event loop. An invalid config keeps the table in force
        (see the module docstring). Meanwhile, so that the worker never holds the GIL long
        (the event loop waits for it): the cyclic garbage collector is paused (a full
        collection triggered by the worker's allocations held it for tens of milliseconds;
        what it would collect waits for the next collection), and the interpreter's switch
        interval is 1 ms instead of 5 (how long the loop may wait for the GIL).
        """
        async with self._reload_lock:
            generation = self._table.generation + 1
            collecting, interval = gc.isenabled(), sys.getswitchinterval()
            gc.disable()
            sys.setswitchinterval(min(interval, _RELOAD_SWITCH_INTERVAL))
            try:
                table = await asyncio.to_thread(_load_table, self.paths, generation)
            except ConfigError as exc:
                await self._reject(exc)
                return False
            finally:
                sys.setswitchinterval(interval)
                if collecting:
                    gc.enable()
            self._swap(table)
            return True

    async def _reject(self, error: ConfigError) -> None:
        self.reloads["rejected"] += 1
        self.last_error = str(error)
        self.last_error_at = _dt.datetime.now(_dt.UTC)
        logger.error(
            "gateway config rejected; generation %d stays in force: %s",
            self._table.generation,
            error,
        )
        problems = [
            {"file": p.file, "line": p.line, "column": p.column, "message": p.message}
            for p in error.problems
        ]
        with contextlib.suppress(Exception):
            await self.bus.emit(
                {"generation_kept": self._table.generation, "problems": problems},
                topic=CONFIG_REJECTED_TOPIC,
            )

    async def watch(self) -> None:
        """Reload whenever a config file changes, appears or disappears (until :meth:`stop`)."""
        import watchfiles

        files = {p.resolve() for p in self.paths if not p.is_dir()}
        dirs = {p.resolve() for p in self.paths if p.is_dir()}
        roots = sorted({str(f.parent) for f in files} | {str(d) for d in dirs})
        if not roots:
            return

        def relevant(change: watchfiles.Change, path: str) -> bool:
            del change
            found = Path(path).resolve()
            return found in files or (found.parent in dirs and found.suffix in (".yaml", ".yml"))

        async for _ in watchfiles.awatch(
            *roots,
            watch_filter=relevant,
            stop_event=self._stop_watching,
            debounce=50,
            step=20,
            rust_timeout=200,
            # the files of the config's folders only: a log (or anything busy) in a
            # subfolder would otherwise wake the watcher on every write
            recursive=False,
        ):
            await self.reload()

    # -- intake -----------------------------------------------------------------------------

    async def accept(self, envelopes: Sequence[Envelope[Any]]) -> list[int]:
        """Append ``envelopes`` to the log; return their positions.

        Idempotent on (``source``, ``id``): an event already in the log gets its first
        position back and is not routed again. Each new event is routed later by the table
        in force now.

        Raises:
            EventIdConflictError: an id is already in the log from another source (the
                log keys events by id alone); the rest of the batch was stored.
            StoreError: the log did not take the events (none of them is stored).
        """
        table = self._table
        pending = self._pending if self._lease.held else {}  # a standby routes nothing
        for env in envelopes:
            pending[env.id] = table
        try:
            positions, known = await self._append_grouped(envelopes)
        except BaseException:
            for env in envelopes:
                pending.pop(env.id, None)
            raise
        routed = self._routed_position
        conflicts: list[tuple[str, str, str]] = []
        if positions and min(positions) > max(known, routed):  # all new: the usual case
            self.accepted += len(envelopes)
            return positions
        for env, position in zip(envelopes, positions, strict=True):
            if position <= routed:  # a duplicate of an event already routed
                pending.pop(env.id, None)
            if position <= known:  # possibly stored before: from the same source?
                first = await self.store.read(after=position - 1, upto=position, unknown="raw")
                if first and first[0].envelope.source != env.source:
                    conflicts.append((env.id, env.source, first[0].envelope.source))
        self.accepted += len(envelopes) - len(conflicts)
        if conflicts:
            raise EventIdConflictError(conflicts, envelopes, positions)
        return positions

    async def _append_grouped(self, envelopes: Sequence[Envelope[Any]]) -> tuple[list[int], int]:
        """Append ``envelopes`` with the other calls of their group; their positions and the
        highest position known before their append."""
        intake = _Intake(envelopes, asyncio.get_running_loop().create_future())
        self._group.append(intake)
        if self._appender is None:
            self._appender = asyncio.create_task(self._append_groups(), name="tidings-intake")
        return await intake.done

    async def _append_groups(self) -> None:
        """Append the waiting calls, a group at a time, until none waits."""
        group: list[_Intake] = []
        try:
            while self._group:
                group, later = [], []
                ids: set[str] = set()
                for intake in self._group:
                    envelopes = intake.envelopes
                    if len(envelopes) == 1:  # a single event's POST: no set to build
                        event_id = envelopes[0].id
                        if event_id in ids:
                            later.append(intake)
                        else:
                            group.append(intake)
                            ids.add(event_id)
                        continue
                    mine = {e.id for e in envelopes}
                    if ids.isdisjoint(mine):
                        group.append(intake)
                        ids |= mine
                    else:
                        later.append(intake)
                self._group = later
                await self._append_group(group)
        except BaseException:  # cancelled (stop): no caller waits for ever
            for intake in (*group, *self._group):
                intake.done.cancel()
            self._group = []
            raise
        finally:
            self._appender = None

    async def _append_group(self, group: list[_Intake]) -> None:
        known = self._high_water
        try:
            positions = await self.store.append([e for i in group for e in i.envelopes])
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0], exc)
                return
            for intake in group:  # each alone: one call's failure is not another's
                await self._append_group([intake])
            return
        if positions:
            self._high_water = max(known, max(positions))
        start = 0
        for intake in group:
            end = start + len(intake.envelopes)
            _settle(intake, (positions[start:end], known))
            start = end

    # -- routing ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the log after the consumer's checkpoint (and watching files, unless
        created with ``watch=False``)."""
        self._committed = await self.store.load_checkpoint(self.consumer)
        self._routed_position = self._committed
        self._high_water = await self.store.last_position()
        self._follower = asyncio.create_task(self._follow(), name="tidings-gateway-follower")
        if self.paths and self._watches:
            self._watcher = asyncio.create_task(self.watch(), name="tidings-gateway-watcher")
        try:
            await self.brokers.start(self._table.config.broker_sources)
        except BaseException:
            await self.stop(0)
            raise
        self._started = True

    async def _follow(self) -> None:
        """Take the routing lease, then route the log until the lease is lost; again."""
        lease = self._lease
        while not self.store.closed:
            failed = False
            try:
                await lease.acquire()
                # Another replica may have routed past this one's checkpoint meanwhile.
                committed = await self.store.load_checkpoint(self.consumer)
                self._committed = max(self._committed, committed)
                self._routed_position = max(self._routed_position, committed)
                following = asyncio.create_task(self._follow_log())
                lost = asyncio.create_task(lease.lost.wait())
                try:
                    await asyncio.wait({following, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    # Both cancelled before either is waited for: a stop cancelling this
                    # meanwhile leaves no follower routing on (a failure of it is raised).
                    await cancel_and_wait(lost, following)
                if not lease.lost.is_set():
                    return  # the store closed
                logger.error("gateway: the routing lease was lost; standing by to retake it")
            except Exception:
                logger.exception("gateway: taking up routing failed; retrying")
                failed = True
            finally:
                self._pending.clear()
                if lease.held and not lease.lost.is_set():  # the next holder starts there
                    with contextlib.suppress(Exception):
                        await self._commit()
                await lease.release()
            if failed:
                await asyncio.sleep(_FOLLOW_RETRY_MAX)

    async def _follow_log(self) -> None:
        """Follow the log; when reading it fails, log, back off and resume where it was."""
        delay = _FOLLOW_RETRY_FIRST
        while not self.store.closed:
            try:
                await self._follow_once()
            except Exception:
                logger.exception(
                    "gateway: following the log failed after position %d; resuming in %.2f s",
                    self._routed_position,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _FOLLOW_RETRY_MAX)

    async def _follow_once(self) -> None:
        async with self.store.subscribe(after=self._routed_position, unknown="raw") as records:
            async for record in records:
                env = record.envelope
                table = self._pending.pop(env.id, None) or self._table
                dispatches = table.route(env)
                if env.topic == REDRIVE_TOPIC:
                    dispatches = [*dispatches, *await self._redrive(env, table)]
                position = record.position
                if dispatches:
                    self._in_flight[position] = len(dispatches)
                    for dispatch in dispatches:
                        if self._free_slots:
                            self._free_slots -= 1
                        else:
                            await self._take_slot()
                        if self._batch_topics and dispatch.topics_only:
                            self._lane.append((position, dispatch))
                            if self._lane_task is None:
                                self._lane_task = self._start(self._send_lane())
                            continue
                        self._start(self._deliver(position, dispatch))
                self.routed += 1
                self._routed_position = position
                if self._on_routed is not None:
                    self._on_routed(record, table, dispatches)
                if self._progress_waiters:
                    await self._signal_progress()
                # (while deliveries lag behind, the safe position may not have moved)
                committed = self._committed
                if position - committed >= _COMMIT_EVERY and self.safe_position() > committed:
                    now = time.monotonic()
                    if now - self._committed_at >= _COMMIT_INTERVAL:
                        self._committed_at = now
                        await self._commit()

    async def _redrive(self, env: Envelope[Any], table: RouteTable) -> list[Dispatch]:
        dispatch, gone = await redrive_dispatch(self.store, env, table)
        if dispatch is None:
            logger.error("gateway: redrive record %s ignored: %s", env.id, gone)
            return []
        if gone:
            await self.sender.dead_letter(dispatch, dispatch.targets[0], 0, None, gone)
            return []
        return [dispatch]

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, position: int, dispatch: Dispatch) -> None:
        started = time.perf_counter()
        try:
            outcomes = await self.sender.send(dispatch)
            self.stats.record(
                dispatch.route, dispatch.variant, time.perf_counter() - started, outcomes
            )
        finally:
            self._delivered(position)
            if self._progress_waiters:
                await self._signal_progress()

    async def _send_lane(self) -> None:
        """Publish the topic dispatches routed meanwhile together (one transaction for all
        the events routed from one read of the log), until none waits."""
        try:
            while self._lane:
                lane, self._lane = self._lane, []
                started = time.perf_counter()
                try:
                    sent = await self.sender.send_topics([dispatch for _, dispatch in lane])
                    self._record_lane(lane, sent, time.perf_counter() - started)
                finally:
                    for position, _ in lane:
                        self._delivered(position)
                if self._progress_waiters:
                    await self._signal_progress()
        finally:
            self._lane_task = None

    def _record_lane(
        self,
        lane: list[tuple[int, Dispatch]],
        sent: list[list[TargetOutcome]],
        latency: float,
    ) -> None:
        """Count the lane's dispatches in the route statistics: a run of dispatches of one
        route and variant with the same outcomes is counted at once."""
        record = self.stats.record
        run_key: tuple[str, str | None] | None = None
        run_outcomes: list[TargetOutcome] = []
        run = 0
        for (_, dispatch), outcomes in zip(lane, sent, strict=True):
            key = (dispatch.route, dispatch.variant)
            if key == run_key and outcomes == run_outcomes:
                run += 1
                continue
            if run_key is not None:
                record(*run_key, latency, run_outcomes, run)
            run_key, run_outcomes, run = key, outcomes, 1
        if run_key is not None:
            record(*run_key, latency, run_outcomes, run)

    async def _take_slot(self) -> None:
        """Wait until a dispatch in flight finishes, then take its slot."""
        while not self._free_slots:
            room = self._room
            if room is None or room.done():  # done: cancelled with a follower that waited
                room = self._room = asyncio.get_running_loop().create_future()
            await room
        self._free_slots -= 1

    def _delivered(self, position: int) -> None:
        """One dispatch of the record at ``position`` is done."""
        self._free_slots += 1
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)
        left = self._in_flight[position] - 1
        if left:
            self._in_flight[position] = left
        else:
            del self._in_flight[position]

    async def _signal_progress(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    def safe_position(self) -> int:
        """The last position whose record and every earlier one are fully delivered."""
        for first in self._in_flight:  # keys in routing order: the first is the lowest
            return first - 1
        return self._routed_position

    async def _commit(self) -> None:
        position = self.safe_position()
        if position > self._committed:
            await self.store.commit(self.consumer, position)
            self._committed = position

    async def wait_routed(self, position: int, timeout: float) -> bool:
        """Wait until every record up to ``position`` is routed and delivered."""

        def done() -> bool:
            return self.safe_position() >= position

        self._progress_waiters += 1
        try:
            async with self._progress:
                try:
                    await asyncio.wait_for(self._progress.wait_for(done), timeout)
                except TimeoutError:
                    return False
        finally:
            self._progress_waiters -= 1
        return True

    async def stop(self, timeout: float | None = None) -> bool:
        """Drain (route and deliver what was accepted) within ``timeout``, then stop.

        Returns whether everything was drained. Commits the checkpoint up to what was fully
        delivered (before deliveries still in flight are cancelled: those are routed again
        at the next start), then releases the routing lease.
        """
        self._started = False
        await self.brokers.stop_sources()  # intake from brokers stops first, as HTTP's does
        limit = self._table.config.drain_timeout if timeout is None else timeout
        drained = True  # a standby's accepted events are in the log, for the router
        if self._lease.held:
            drained = await self.wait_routed(await self.store.last_position(), limit)
        self._stop_watching.set()
        with contextlib.suppress(Exception):  # both cancelled, then both waited for
            await cancel_and_wait(*(t for t in (self._follower, self._watcher) if t is not None))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dead_letters.stop()
        await self.brokers.aclose()
        await self._client.aclose()
        return drained

    def describe(self) -> dict[str, Any]:
        """The live config and reload state (for ``GET /config``)."""
        out = self._table.describe()
        out["last_error"] = self.last_error
        out["last_error_at"] = (
            None if self.last_error_at is None else self.last_error_at.isoformat()
        )
        out["reloads"] = dict(self.reloads)
        out["sources"] = self.brokers.describe_sources()
        return out


class _Intake:
    """One :meth:`Gateway.accept` call waiting for its grouped append."""

    __slots__ = ("done", "envelopes")

    def __init__(
        self, envelopes: Sequence[Envelope[Any]], done: asyncio.Future[tuple[list[int], int]]
    ) -> None:
        self.envelopes = envelopes
        self.done = done


def _settle(intake: _Intake, outcome: tuple[list[int], int] | Exception) -> None:
    if intake.done.done():  # the caller was cancelled; its events are stored regardless
        return
    if isinstance(outcome, Exception):
        intake.done.set_exception(outcome)
    else:
        intake.done.set_result(outcome)


def _load_table(paths: Sequence[Path], generation: int) -> RouteTable:
    return RouteTable.build(load_config(paths), generation)
