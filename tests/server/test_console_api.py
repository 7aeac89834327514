"""The console's HTTP side without a browser: the page and its assets, access, the log
browser, dead-letter redrive and discard as recorded in the log, the config diff, health."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest

from tidings.gateway.dead_letters import DISCARD_TOPIC, REDRIVE_TOPIC

from . import browser
from .conftest import Service, receiver, service, structured
from .consoles import HOOKED, post


async def dead_letters(svc: Service) -> list[dict[str, object]]:
    answer = await svc.client.get("/console/api/dead-letters")
    assert answer.status_code == 200, answer.text
    letters: list[dict[str, object]] = answer.json()["dead_letters"]
    return letters


async def test_the_page_is_served_to_browsers_with_its_vendored_assets_and_json_to_the_rest(
    tmp_path: Path,
) -> None:
    async with service(tmp_path, "routes: []\n") as svc:
        page = await svc.client.get("/", headers={"accept": "text/html"})
        index = await svc.client.get("/")
        script = await svc.client.get("/console/static/console.js")
        uplot = await svc.client.get("/console/static/vendor/uplot/uPlot.iife.min.js")
        licence = await svc.client.get("/console/static/vendor/uplot/LICENSE")
    assert page.status_code == 200
    assert "<title>tidings console</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "https://" not in page.text
    assert "http://" not in page.text
    assert index.json()["service"] == "tidings gateway"
    assert script.status_code == uplot.status_code == 200
    assert "MIT" in licence.text


TOKENS = """\
http:
  tokens:
    - {name: writer, token_env: WRITER_TOKEN, publish: [">"], subscribe: []}
    - {name: reader, token_env: READER_TOKEN, publish: [], subscribe: ["orders.>"]}
routes:
  - {name: small, from: orders.placed, to: [{topic: audit.small}]}
  - {name: other, from: billing.>, to: [{topic: audit.billing}]}
"""


async def test_the_console_takes_the_api_tokens_and_a_token_without_subscribe_sees_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRITER_TOKEN", "w-secret")
    monkeypatch.setenv("READER_TOKEN", "r-secret")
    async with service(tmp_path, TOKENS) as svc:
        anonymous = await svc.client.get("/console/api/session")
        writer = await svc.client.get(
            "/console/api/stream", headers={"authorization": "Bearer w-secret"}
        )
        bad_login = await svc.client.post("/console/login", data={"token": "nope"})
        login = await svc.client.post("/console/login", data={"token": "r-secret"})
        assert login.status_code == 303
        cookie = login.cookies["tidings_console"]
        assert "httponly" in login.headers["set-cookie"].lower()
        assert "samesite=strict" in login.headers["set-cookie"].lower()
        async with httpx.AsyncClient(base_url=svc.url, cookies={"tidings_console": cookie}) as c:
            session = await c.get("/console/api/session")
            everything = await c.get("/console/api/log", params={"topic": ">"})
            orders = await c.get("/console/api/log", params={"topic": "orders.>"})
            config = await c.get("/console/api/config")
    assert anonymous.status_code == 401
    assert writer.status_code == 403
    assert "no subscribe scope" in writer.json()["detail"]
    assert bad_login.status_code == 401
    assert session.json()["caller"] == "reader"
    assert everything.status_code == 403  # its scope is orders.> only
    assert orders.status_code == 200
    assert config.status_code == 200


async def test_the_log_browser_reads_by_position_by_time_and_by_cel_and_names_bad_input(
    tmp_path: Path,
) -> None:
    async with service(tmp_path, "routes: []\n") as svc:
        await post(svc, [structured(i, amount=i * 10) for i in range(20)])
        page = (await svc.client.get("/console/api/log", params={"after": 5, "limit": 3})).json()
        cel = (
            await svc.client.get("/console/api/log", params={"filter": "data.amount >= 150"})
        ).json()
        since = await svc.client.get("/console/api/log", params={"since": "2000-01-01T00:00:00Z"})
        future = await svc.client.get("/console/api/log", params={"since": "2200-01-01T00:00:00Z"})
        bad_cel = await svc.client.get("/console/api/log", params={"filter": "nonsense > 1"})
        bad_time = await svc.client.get("/console/api/log", params={"since": "yesterday"})
        bad_topic = await svc.client.get("/console/api/log", params={"topic": "a..b"})
        one = await svc.client.get("/console/api/event/3")
        none = await svc.client.get("/console/api/event/999")
    assert [e["position"] for e in page["events"]] == [6, 7, 8]
    assert page["next_after"] == 8
    assert [e["payload"]["n"] for e in cel["events"]] == [15, 16, 17, 18, 19]
    assert len(since.json()["events"]) == 20
    assert future.json()["events"] == []
    assert bad_cel.status_code == 400
    assert "nonsense" in bad_cel.json()["detail"]
    assert bad_time.status_code == 400
    assert "'since'" in bad_time.json()["detail"]
    assert bad_topic.status_code == 400
    assert one.json()["payload"]["n"] == 2
    assert none.status_code == 404


async def test_redrive_and_discard_are_recorded_in_the_log_and_the_dead_letters_stay(
    tmp_path: Path,
) -> None:
    async with (
        receiver([500, 500]) as (hook, got),
        service(tmp_path, HOOKED.format(hook=hook, attempts=1)) as svc,
    ):
        await post(svc, [structured(1, amount=500), structured(2, amount=500)])
        await got.wait_for(2)
        await svc.settle()
        letters = await dead_letters(svc)
        assert [(x["route"], x["state"], x["attempts"]) for x in letters] == [
            ("big", "open", 1)
        ] * 2
        first, second = sorted(int(str(x["position"])) for x in letters)
        redrive = await svc.client.post(
            "/console/api/dead-letters/redrive", json={"positions": [first]}
        )
        discard = await svc.client.post(
            "/console/api/dead-letters/discard", json={"positions": [second], "reason": "test"}
        )
        again = await svc.client.post(
            "/console/api/dead-letters/redrive", json={"positions": [first, second, 999]}
        )
        as_form = await svc.client.post(
            "/console/api/dead-letters/redrive", data={"positions": str(first)}
        )
        await got.wait_for(3)
        await svc.settle()
        states = {x["position"]: x["state"] for x in await dead_letters(svc)}
        redrives = await svc.records(REDRIVE_TOPIC)
        discards = await svc.records(DISCARD_TOPIC)
        still = await svc.records("orders.dead")
    assert redrive.status_code == 200
    assert discard.status_code == 200
    assert again.status_code == 207
    messages = [r["message"] for r in again.json()["results"]]
    assert "already redriven" in messages[0]
    assert "already discarded" in messages[1]
    assert "no dead letter" in messages[2]
    assert as_form.status_code == 415  # a cross-site form cannot redrive
    assert states == {first: "redriven", second: "discarded"}
    assert len(got.requests) == 3  # the redriven one, once
    assert [r.envelope.payload["dead_letter"] for r in redrives] == [first]
    assert [r.envelope.payload["dead_letter"] for r in discards] == [second]
    assert discards[0].envelope.payload["reason"] == "test"
    assert len(still) == 2  # never deleted


async def test_the_config_view_diffs_against_the_previous_config_and_health_names_targets(
    tmp_path: Path,
) -> None:
    secret_store = "store: postgresql://user:pw-secret@127.0.0.1:1/db\n"  # not the one used
    async with service(
        tmp_path, secret_store + HOOKED.format(hook="http://127.0.0.1:9/hook", attempts=1)
    ) as svc:
        await post(svc, [structured(1, amount=500)])
        await svc.settle()
        before = (await svc.client.get("/console/api/config")).json()
        (tmp_path / "gateway.yaml").write_text(
            secret_store
            + HOOKED.format(hook="http://127.0.0.1:9/hook", attempts=1).replace("> 100", "> 200")
        )
        assert await svc.gateway.reload()
        after = (await svc.client.get("/console/api/config")).json()
        async with svc.client.stream("GET", "/console/api/stream") as stream:  # health on it
            seen = ""
            async for chunk in stream.aiter_text():
                seen += chunk
                if "event: health" in seen and "\n\n" in seen.split("event: health", 1)[1]:
                    break
    assert "pw-secret" not in json.dumps([before, after])
    assert "user:***@" in after["text"]
    assert before["diff"] == []
    assert before["previous_generation"] is None
    assert after["previous_generation"] == 1
    assert "-    when: data.amount > 100" in after["diff"]
    assert "+    when: data.amount > 200" in after["diff"]
    data = json.loads(seen.split("event: health\ndata: ", 1)[1].split("\n\n", 1)[0])
    assert data["store"]["state"] == "ok"
    assert data["store"]["url"] == "postgresql://user:***@127.0.0.1:1/db"
    assert "pw-secret" not in seen
    assert data["transport"]["state"] == "none"
    [target] = data["targets"]
    assert target["state"] == "failing"
    assert target["route"] == "big"
    assert "ConnectError" in target["last_error"]


async def test_a_binary_payload_is_shown_as_base64_text(tmp_path: Path) -> None:
    binary = {**structured(1), "datacontenttype": "application/octet-stream"}
    del binary["data"]
    binary["data_base64"] = base64.b64encode(b"\x00\xffbytes").decode()
    async with service(tmp_path, "routes: []\n") as svc:
        await post(svc, [binary])
        page = await svc.client.get("/console/api/log")
        one = await svc.client.get("/console/api/event/1")
    assert page.status_code == 200
    assert page.json()["events"][0]["payload"] == binary["data_base64"]
    assert one.json()["payload"] == binary["data_base64"]


def test_without_chromium_a_browser_test_skips_saying_why_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        browser.require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="/nonexistent/chromium is missing"):
        browser.require_chromium()


async def test_concurrent_redrives_of_one_dead_letter_record_one(tmp_path: Path) -> None:
    async with service(tmp_path, HOOKED.format(hook="http://127.0.0.1:9/hook", attempts=1)) as svc:
        await post(svc, [structured(1, amount=500)])
        await svc.settle()
        [letter] = await dead_letters(svc)
        answers = await asyncio.gather(
            *(
                svc.client.post(
                    "/console/api/dead-letters/redrive", json={"positions": [letter["position"]]}
                )
                for _ in range(4)
            )
        )
        await svc.settle()
        redrives = await svc.records(REDRIVE_TOPIC)
    assert sorted(a.status_code for a in answers) == [200, 207, 207, 207]
    assert len(redrives) == 1
