"""The console in a real browser: Playwright driving Debian's Chromium against the real
service (uvicorn on loopback, a SQLite log, real webhook receivers).

Each test saves a screenshot in its tmp dir (``screenshot.png``). With
``TIDINGS_CONSOLE_SCREENSHOT=PATH`` set, the overview test also writes the README's picture
of the console to PATH (``docs/console.png``).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tidings.gateway.dead_letters import REDRIVE_TOPIC

from .browser import browsing
from .conftest import receiver, service, structured
from .consoles import HOOKED, post

EXAMPLE = Path(__file__).parents[2] / "examples" / "gateway.yaml"

pytestmark = pytest.mark.timeout(90)


async def live(page: Page, url: str, hash_: str = "") -> None:
    await page.goto(f"{url}/{hash_}")
    await expect(page.get_by_test_id("connection")).to_have_text("live")


async def route_figure(page: Page, route: str, testid: str) -> int:
    text = await page.locator(
        f'#routes tr[data-route="{route}"] [data-testid="{testid}"]'
    ).inner_text()
    return int(text.replace(",", ""))


async def test_overview_shows_every_route_of_the_example_config_and_counts_reach_n(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "shop-secret")
    orders = [
        structured(i, amount=250 if i % 4 == 0 else 20, card_number="4111") for i in range(120)
    ]
    transactions = [
        {**structured(1000 + i, topic="transactions.card"), "modelversion": f"m-{i}"}
        for i in range(80)
    ]
    big = sum(1 for e in orders if e["data"]["amount"] > 100)
    async with (
        service(tmp_path, EXAMPLE.read_text(), grace=1, authorization="Bearer shop-secret") as svc,
        browsing(tmp_path) as browser,
    ):
        page = browser.page
        await page.goto(f"{svc.url}/")
        await page.get_by_test_id("token").fill("shop-secret")  # the page's own login form
        await page.get_by_test_id("login").click()
        await expect(page.get_by_test_id("connection")).to_have_text("live")
        names = [r.name for r in svc.gateway.table.config.routes]
        await expect(page.locator("#routes tbody tr")).to_have_count(len(names))
        for name in names:
            await expect(page.locator(f'#routes tr[data-route="{name}"]')).to_be_visible()

        everything = orders + transactions
        for start in range(0, len(everything), 20):  # over a few seconds: the charts show it
            await post(svc, everything[start : start + 20])
            await asyncio.sleep(0.4)
        n = len(orders) + len(transactions)
        await expect(page.get_by_test_id("accepted")).to_have_text(str(n), timeout=20_000)
        events = page.locator('#routes [data-testid="route-events"]')
        # the big orders' webhook (port 9) refuses: three attempts with backoff, then a dead letter
        await expect(events).to_have_text(
            [str(big), str(len(orders) - big), str(len(transactions))], timeout=30_000
        )
        await expect(page.locator('#routes [data-testid="route-dead"]')).to_have_text(
            [str(big), "0", "0"]
        )
        split = await page.locator('#routes tr[data-route="scoring"] td.variants').inner_text()
        counted = {k: int(v) for k, v in re.findall(r"([\w.-]+): (\d+)", split)}
        assert sum(counted.values()) == len(transactions)
        assert set(counted) == {"v1-main", "v2-canary"}  # sticky by header value: both seen
        assert browser.errors == []
        target = os.environ.get("TIDINGS_CONSOLE_SCREENSHOT")
        if target:
            await page.set_viewport_size({"width": 1400, "height": 470})
            await page.wait_for_timeout(1500)  # the next overview
            await page.screenshot(path=target)


SMALL_ONLY = """\
routes:
  - name: small
    from: orders.placed
    to: [{topic: audit.small}]
"""


async def test_a_failing_webhooks_events_are_dead_letters_and_a_redrive_delivers_them_once(
    tmp_path: Path,
) -> None:
    failing = 3
    async with (
        receiver([503] * (2 * failing)) as (hook, got),  # 2 attempts each, then it recovers
        service(tmp_path, HOOKED.format(hook=hook, attempts=2), grace=1) as svc,
        browsing(tmp_path) as browser,
    ):
        page = browser.page
        await live(page, svc.url, "#dead-letters")
        await post(svc, [structured(i, amount=500) for i in range(failing)])
        rows = page.locator("#dead tbody tr")
        await expect(rows).to_have_count(failing, timeout=20_000)
        await expect(rows.first).to_contain_text("big")
        await expect(rows.first).to_contain_text("HTTP 503")
        await expect(page.locator("#dead-count")).to_have_text(str(failing))
        assert len(got.requests) == 2 * failing

        await page.locator("#dead-all").check()
        await page.get_by_test_id("redrive-selected").click()
        await expect(page.locator("#dead-messages li.ok")).to_have_count(failing)
        await got.wait_for(3 * failing)
        await svc.settle()
        await expect(rows).to_have_count(0)  # none open
        await page.locator("#dead-settled").check()
        await expect(page.get_by_test_id("dead-state")).to_have_text(
            ["redriven by anonymous"] * failing
        )
        redrives = await svc.records(REDRIVE_TOPIC)
    redelivered = [headers["ce-id"] for headers, _ in got.requests[2 * failing :]]
    assert sorted(redelivered) == [f"ev-{i}" for i in range(failing)]  # each once
    assert sorted(r.envelope.payload["original_id"] for r in redrives) == sorted(redelivered)


async def test_redriving_an_event_whose_route_a_reload_removed_says_so_and_loses_nothing(
    tmp_path: Path,
) -> None:
    config = HOOKED.format(hook="http://127.0.0.1:9/hook", attempts=1)
    async with (
        service(tmp_path, config, grace=1) as svc,
        browsing(tmp_path) as browser,
    ):
        page = browser.page
        await live(page, svc.url, "#dead-letters")
        await post(svc, [structured(1, amount=500)])
        rows = page.locator("#dead tbody tr")
        await expect(rows).to_have_count(1, timeout=20_000)
        (tmp_path / "gateway.yaml").write_text(SMALL_ONLY)
        assert await svc.gateway.reload()
        # (the file watcher may reload it too: one more generation, the same config)
        await expect(page.locator("#generation")).to_have_text(re.compile(r"generation [2-9]$"))

        await page.locator("#dead-all").check()
        await page.get_by_test_id("redrive-selected").click()
        message = page.locator("#dead-messages li.fail")
        await expect(message).to_contain_text("route 'big'")
        await expect(message).to_contain_text("a reload removed it")
        await expect(rows).to_have_count(1)  # still open, still there
        await expect(page.get_by_test_id("dead-state")).to_have_text("open")

        await page.goto(f"{svc.url}/#config")
        await expect(page.get_by_test_id("cfg-generation")).to_contain_text("(previous: 1)")
        await expect(page.locator("#cfg-diff .del").filter(has_text="name: big")).to_have_count(1)
        await svc.settle()
        assert await svc.records(REDRIVE_TOPIC) == []
        assert len(await svc.records("orders.dead")) == 1
        assert len(await svc.records("orders.placed")) == 1


async def test_html_and_script_in_an_event_are_shown_as_text_and_the_tail_filters(
    tmp_path: Path,
) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    hostile = {
        **structured(1, note="<img src=x onerror=\"alert('img')\">"),
        "id": "<svg onload=alert('id')>",
        "source": "<script>alert('source')</script>",
        "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
    }
    hostile["data"]["html"] = "<script>window.__ran = 1; alert('data')</script>"
    sibling = {**structured(2), "traceparent": f"00-{trace}-b7ad6b7169203331-01"}
    async with (
        service(tmp_path, "routes: []\n", grace=1) as svc,
        browsing(tmp_path) as browser,
    ):
        page = browser.page
        await live(page, svc.url, "#events")
        await post(svc, [hostile, sibling])
        rows = page.locator("#tail tbody tr")
        await expect(rows).to_have_count(2)
        await rows.filter(has_text="<svg onload").click()
        detail = page.get_by_test_id("detail")
        await expect(detail).to_contain_text("<svg onload=alert('id')>")
        await expect(detail).to_contain_text("<script>alert('source')</script>")
        await expect(page.get_by_test_id("detail-payload")).to_contain_text(
            "<script>window.__ran = 1; alert('data')</script>"
        )
        # the trace id is a link: it opens the log at every event of that trace
        await page.get_by_test_id("trace-link").click()
        await expect(page.locator("#log tbody tr")).to_have_count(2)
        assert await page.locator("#events img, #events script, #events svg").count() == 0
        assert await page.evaluate("() => window.__ran") is None
        # the tail's CEL filter: a bad one is named, a good one applies to what comes next
        await page.get_by_test_id("tail-filter").fill("data.n >")
        await page.get_by_role("button", name="apply").click()
        await expect(page.locator("#tail-error")).to_contain_text("does not compile")
        await expect(page.get_by_test_id("connection")).to_have_text("live")
        await page.get_by_test_id("tail-filter").fill("data.n == 4")
        await page.get_by_role("button", name="apply").click()
        await expect(page.get_by_test_id("connection")).to_have_text("live")
        await post(svc, [structured(3), structured(4)])
        await expect(rows).to_have_count(1)
        await expect(rows).to_contain_text("ev-4")
    assert browser.dialogs == []
    assert browser.errors == []


FLOOD_RATE = 10_000  # events/s
FLOOD_SECONDS = 3
FLOOD_BATCH = 500


async def test_a_flood_of_events_leaves_the_page_responsive_and_its_memory_bounded(
    tmp_path: Path,
) -> None:
    total = FLOOD_RATE * FLOOD_SECONDS
    async with (
        service(tmp_path, "routes: []\n", grace=1) as svc,
        browsing(tmp_path) as browser,
    ):
        page = browser.page
        await live(page, svc.url, "#events")
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Performance.enable")

        async def heap() -> float:
            await cdp.send("HeapProfiler.collectGarbage")
            metrics = (await cdp.send("Performance.getMetrics"))["metrics"]
            return float(next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"))

        before = await heap()
        loop = asyncio.get_running_loop()
        started = loop.time()
        pauses: list[float] = []

        async def probe() -> None:  # how long the page takes to answer, during the flood
            while loop.time() - started < FLOOD_SECONDS:
                asked = loop.time()
                await page.evaluate("() => document.querySelectorAll('#tail tr').length")
                pauses.append(loop.time() - asked)
                await asyncio.sleep(0.2)

        probing = asyncio.create_task(probe())
        interval = FLOOD_BATCH / FLOOD_RATE
        for k in range(total // FLOOD_BATCH):  # paced: at most FLOOD_RATE events/s
            await post(
                svc,
                [structured(k * FLOOD_BATCH + i, topic="flood.tick") for i in range(FLOOD_BATCH)],
            )
            ahead = started + (k + 1) * interval - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
        took = loop.time() - started
        await probing
        await expect(page.locator("#tail-stats")).to_contain_text(f"up to position {total:,}")
        rows = await page.locator("#tail tbody tr").count()
        stats = await page.get_by_test_id("tail-stats").inner_text()
        after = await heap()
    shown, not_shown = (
        int(n.replace(",", "")) for n in re.findall(r"([\d,]+) (?:not )?shown", stats)
    )
    assert rows <= 200  # the tail keeps its newest rows only
    assert shown < total  # sampled: the page was not sent every event
    assert shown + not_shown == total  # and it says exactly how many it left out
    assert max(pauses) < 5.0, pauses  # the page kept answering (generous: loaded machine)
    assert after - before < 20e6, (before, after)
    print(  # noqa: T201
        f"flood: {total} events in {took:.2f} s ({total / took:.0f}/s); heap {before / 1e6:.1f} -> {after / 1e6:.1f} MB; slowest page answer {max(pauses) * 1000:.0f} ms"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_server_restart_shows_disconnected_and_the_page_reconnects_by_itself(
    tmp_path: Path,
) -> None:
    port = _free_port()
    async with browsing(tmp_path) as browser:
        page = browser.page
        banner = page.get_by_test_id("disconnected")
        async with service(tmp_path, "routes: []\n", port=port, grace=1) as svc:
            await live(page, svc.url, "#events")
            await expect(banner).to_be_hidden()
        await expect(banner).to_be_visible(timeout=10_000)
        await expect(page.get_by_test_id("connection")).to_have_text("disconnected")
        await browser.shot(tmp_path / "disconnected.png")
        async with service(tmp_path, "routes: []\n", port=port, grace=1) as svc:
            await expect(page.get_by_test_id("connection")).to_have_text("live", timeout=20_000)
            await expect(banner).to_be_hidden()
            await post(svc, [structured(99, topic="after.restart")])
            await expect(
                page.locator("#tail tbody tr").filter(has_text="after.restart")
            ).to_have_count(1)


async def test_a_token_without_a_subscribe_scope_sees_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRITER_TOKEN", "writer-secret")
    config = """\
http:
  tokens:
    - {name: writer, token_env: WRITER_TOKEN, publish: [">"], subscribe: []}
routes:
  - {name: small, from: orders.placed, to: [{topic: audit.small}]}
"""
    async with (
        service(tmp_path, config, grace=1) as svc,
        browsing(tmp_path) as browser,
    ):
        page = browser.page
        await page.goto(f"{svc.url}/")
        await page.get_by_test_id("token").fill("writer-secret")
        await page.get_by_test_id("login").click()
        await expect(page.get_by_test_id("denied")).to_contain_text("no subscribe scope")
        await expect(page.locator("#tabs")).to_be_hidden()
        await expect(page.locator("#routes tbody tr")).to_have_count(0)
        assert "small" not in await page.locator("body").inner_text()
