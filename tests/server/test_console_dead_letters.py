"""The console's dead letters at scale and across restarts: a log with 20,000 dead letters
listed a page at a time from the gateway's index (newest first, paged back by position, each
state exact), in the API and in the browser; and the dead letters of a route removed before
a restart, still listed and settled."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

import tidings
from tidings.event import Envelope
from tidings.gateway.dead_letter_index import DeadLetterIndex
from tidings.gateway.dead_letters import DISCARD_TOPIC, REDRIVE_TOPIC

from .browser import browsing
from .conftest import Service, service, structured
from .consoles import post

pytestmark = pytest.mark.timeout(120)
logger = logging.getLogger(__name__)

LETTERS = 20_000
DEAD = "orders.dead"


def letter(i: int) -> dict[str, Any]:
    """A dead letter's data as the gateway writes it, for original event ``o{i}``."""
    return {
        "route": "gone",
        "target": "http://127.0.0.1:9/hook",
        "attempts": 3,
        "status": 503,
        "error": f"HTTP 503 ({i})",
        "event": {
            "specversion": "1.0",
            "id": f"o{i}",
            "source": "tests",
            "type": "orders.placed",
            "data": {"n": i},
        },
    }


def expected_state(i: int) -> str:
    if i % 7 == 0:
        return "discarded"  # discarded first; a later redrive record changes nothing
    if i % 11 == 0:
        return "redriven"
    return "open"


async def fill(tmp_path: Path) -> dict[int, str]:
    """A log of LETTERS dead letters, a discard of every 7th and a redrive of every 11th
    (after the discards), routed already (the gateway's checkpoint at the end); return the
    expected state by position."""
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/events.db") as bus:
        store = bus.store
        assert store is not None
        positions: list[int] = []
        for start in range(0, LETTERS, 2000):
            positions += await store.append(
                Envelope(DEAD, letter(i), 1_000_000 + i, source="tests", _id=f"dl-{i}")
                for i in range(start, min(start + 2000, LETTERS))
            )
        settling = [
            Envelope(
                topic,
                {"dead_letter": positions[i], "route": "gone", "by": "seed"},
                2_000_000 + n,
                source="tests",
                _id=f"{topic}-{i}",
            )
            for n, (topic, i) in enumerate(
                [(DISCARD_TOPIC, i) for i in range(0, LETTERS, 7)]
                + [(REDRIVE_TOPIC, i) for i in range(0, LETTERS, 11)]
            )
        ]
        await store.append(settling)
        await store.commit("tidings-gateway", await store.last_position())
    return {positions[i]: expected_state(i) for i in range(LETTERS)}


async def page_of(svc: Service, **params: str | int) -> dict[str, Any]:
    answer = await svc.client.get("/console/api/dead-letters", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_twenty_thousand_dead_letters_are_paged_newest_first_with_exact_states(
    tmp_path: Path,
) -> None:
    expected = await fill(tmp_path)
    counts = {
        s: sum(1 for v in expected.values() if v == s) for s in ("open", "redriven", "discarded")
    }
    newest_first = sorted(expected, reverse=True)
    async with service(tmp_path, "routes: []\n", grace=1) as svc:
        began = time.perf_counter()
        first = await page_of(svc)
        first_took = time.perf_counter() - began
        assert first["counts"] == counts
        index = svc.gateway.dead_letters
        scanned = index.scanned
        fresh = DeadLetterIndex(svc.gateway.store)  # what a gateway start costs
        began = time.perf_counter()
        fresh.start()
        assert await fresh.catch_up(60)
        built = time.perf_counter() - began
        await fresh.stop()
        assert (fresh.counts, fresh.scanned) == (index.counts, scanned)

        seen: list[int] = []
        took: list[float] = []
        before: int | None = None
        for _ in range(LETTERS // 200 + 2):  # bounded: one page more than needed
            began = time.perf_counter()
            page = await page_of(svc, **({} if before is None else {"before": before}))
            took.append(time.perf_counter() - began)
            for entry in page["dead_letters"]:
                assert entry["state"] == expected[entry["position"]], entry
                assert entry["event"]["type"] == "orders.placed"
            seen += [entry["position"] for entry in page["dead_letters"]]
            before = page["next_before"]
            if before is None:
                break
        assert seen == newest_first  # every one once, newest first
        assert index.scanned == scanned  # paging read nothing more of the log

        # only the open ones, paged back; then one discarded through the API
        opened = [p for p in newest_first if expected[p] == "open"]
        newest_open = await page_of(svc, state="open")
        assert [e["position"] for e in newest_open["dead_letters"]] == opened[:200]
        older_open = await page_of(svc, state="open", before=newest_open["next_before"])
        assert [e["position"] for e in older_open["dead_letters"]] == opened[200:400]
        answer = await svc.client.post(
            "/console/api/dead-letters/discard", json={"positions": [opened[0], opened[0]]}
        )
        assert [r["ok"] for r in answer.json()["results"]] == [True, False]  # settled once
        after = await page_of(svc, limit=1)
        assert after["dead_letters"][0]["state"] == "discarded"
        assert after["counts"] == {
            **counts,
            "open": counts["open"] - 1,
            "discarded": counts["discarded"] + 1,
        }

        async with browsing(tmp_path) as browser:
            tab = browser.page
            await tab.goto(f"{svc.url}/#dead-letters")
            rows = tab.locator("#dead tbody tr")
            await expect(rows).to_have_count(200)
            await expect(rows.first).to_have_attribute("data-position", str(opened[1]))
            await expect(tab.get_by_test_id("dead-page")).to_contain_text(
                f"{counts['open'] - 1:,} open, {counts['redriven']:,} redriven, "
                f"{counts['discarded'] + 1:,} discarded"
            )
            await tab.get_by_test_id("dead-older").click()
            await expect(rows.first).to_have_attribute("data-position", str(opened[201]))
            await expect(rows.last).to_have_attribute("data-position", str(opened[400]))
            await tab.get_by_test_id("dead-newest").click()
            await expect(rows.first).to_have_attribute("data-position", str(opened[1]))
            await tab.goto(f"{svc.url}/#overview")
            started = svc.gateway.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            await expect(tab.get_by_test_id("figures-since")).to_contain_text(started)
            assert browser.errors == []
    logger.info(
        f"{LETTERS} dead letters: index built in {built * 1000:.0f} ms "
        f"({scanned} records), first listing {first_took * 1000:.0f} ms, "
        f"a page {statistics.median(took) * 1000:.1f} ms median, "
        f"{max(took) * 1000:.1f} ms max over {len(took)} pages"
    )


GONE = """\
routes:
  - name: gone
    from: orders.placed
    to:
      - {webhook: "http://127.0.0.1:9/hook", timeout: 1s, retry: {max_attempts: 1}}
    dead_letter: gone.dead
"""

OTHER = """\
routes:
  - name: other
    from: billing.>
    to: [{topic: audit.billing}]
"""


async def test_dead_letters_of_a_route_removed_before_a_restart_are_listed_and_settled(
    tmp_path: Path,
) -> None:
    async with service(tmp_path, GONE, grace=1) as svc:
        await post(svc, [structured(i, amount=500) for i in range(2)])
        await svc.settle()
        before = await page_of(svc)
    assert [e["topic"] for e in before["dead_letters"]] == ["gone.dead"] * 2
    first, second = sorted(e["position"] for e in before["dead_letters"])

    async with service(tmp_path, OTHER, grace=1) as svc:  # restarted without the route
        listed = await page_of(svc)
        assert sorted(e["position"] for e in listed["dead_letters"]) == [first, second]
        assert listed["counts"] == {"open": 2, "redriven": 0, "discarded": 0}
        refused = await svc.client.post(
            "/console/api/dead-letters/redrive", json={"positions": [first]}
        )
        [result] = refused.json()["results"]
        assert not result["ok"]
        assert "route 'gone'" in result["message"]
        assert "not in the config" in result["message"]
        discarded = await svc.client.post(
            "/console/api/dead-letters/discard", json={"positions": [second]}
        )
        assert discarded.json()["results"][0]["ok"]
        states = {e["position"]: e["state"] for e in (await page_of(svc))["dead_letters"]}
        assert states == {first: "open", second: "discarded"}
        assert await svc.records(REDRIVE_TOPIC) == []
