"""The service end to end: real uvicorn on loopback, a real webhook receiver, a SQLite log.

The ``cloudevents`` SDK is the oracle: it builds the requests posted and parses what the
webhook receives.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent, from_http

from .conftest import receiver, service, serving, structured

ROUTES = """\
routes:
  - name: big
    from: orders.placed
    when: data.amount > 100
    redact: [data.card]
    to:
      - {{topic: audit.big}}
      - {{webhook: "{hook}", mode: {mode}, timeout: 500ms, retry: {{max_attempts: 3, backoff: 10ms}}}}
    dead_letter: orders.dead
  - name: small
    from: orders.placed
    to: [{{topic: audit.small}}]
"""


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_events_in_every_mode_are_stored_routed_and_sent_to_the_webhook(
    tmp_path: Path, mode: str
) -> None:
    async with (
        receiver() as (hook, got),
        service(tmp_path, ROUTES.format(hook=hook, mode=mode)) as svc,
    ):
        sdk = CloudEvent(
            {"type": "orders.placed", "source": "sdk", "id": "b-1"},
            {"amount": 500, "card": "4111"},
        )
        headers, body = to_binary(sdk)
        one = await svc.client.post("/events", headers=headers, content=body)
        headers, body = to_structured(
            CloudEvent({"type": "orders.placed", "source": "sdk", "id": "s-1"}, {"amount": 5})
        )
        two = await svc.client.post("/events", headers=headers, content=body)
        batch = [structured(1, amount=200, card="x"), structured(2, amount=1)]
        three = await svc.client.post(
            "/events",
            content=json.dumps(batch),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert [r.status_code for r in (one, two, three)] == [202, 202, 202]
        assert one.json()["ids"] == ["b-1"]
        assert three.json()["ids"] == ["ev-1", "ev-2"]
        await got.wait_for(2)
        await svc.settle()
        topics = [r.envelope.topic for r in await svc.records()]
    received = [from_http(h, b) for h, b in got.requests]
    assert sorted(e["id"] for e in received) == ["b-1", "ev-1"]
    assert all("card" not in e.data for e in received)  # redacted for targets
    assert {e["source"] for e in received} == {"sdk", "tests"}
    assert topics.count("orders.placed") == 4  # the log keeps the originals
    assert topics.count("audit.big") == 2
    assert topics.count("audit.small") == 2
    assert "orders.dead" not in topics


async def test_a_retried_post_is_stored_and_routed_once(tmp_path: Path) -> None:
    async with service(tmp_path, ROUTES.format(hook="http://127.0.0.1:9/x", mode="binary")) as svc:
        event = structured(7, amount=1)
        answers = [
            await svc.client.post(
                "/events",
                content=json.dumps(event),
                headers={"content-type": "application/cloudevents+json"},
            )
            for _ in range(3)
        ]
        await svc.settle()
        routed_ids = [r.envelope.id for r, _, _ in svc.routed]
        topics = [r.envelope.topic for r in await svc.records()]
    assert {a.json()["positions"][0] for a in answers} == {1}
    assert routed_ids.count("ev-7") == 1
    assert topics == ["orders.placed", "audit.small"]


async def test_an_id_taken_by_another_source_is_a_409_not_a_silent_duplicate(
    tmp_path: Path,
) -> None:
    batch = "application/cloudevents-batch+json"
    async with service(tmp_path, ROUTES.format(hook="http://127.0.0.1:9/x", mode="binary")) as svc:
        first = await svc.client.post(
            "/events",
            content=json.dumps([structured(1, amount=1)]),
            headers={"content-type": batch},
        )
        other = {**structured(1, amount=1), "source": "elsewhere"}
        mixed = await svc.client.post(
            "/events",
            content=json.dumps([other, structured(2, amount=1)]),
            headers={"content-type": batch},
        )
        retried = await svc.client.post(
            "/events",
            content=json.dumps([structured(1, amount=1)]),
            headers={"content-type": batch},
        )
        await svc.settle()
        routed = sorted(
            r.envelope.id for r, _, _ in svc.routed if r.envelope.topic == "orders.placed"
        )
    assert first.status_code == 202
    assert mixed.status_code == 409
    assert mixed.headers["content-type"] == "application/problem+json"
    assert mixed.json()["conflicts"] == [{"id": "ev-1", "source": "elsewhere", "taken_by": "tests"}]
    assert mixed.json()["accepted"]["ids"] == ["ev-2"]
    assert mixed.json()["accepted"]["positions"][0] > 1
    assert retried.status_code == 202
    assert retried.json()["positions"] == [1]
    assert routed == ["ev-1", "ev-2"]


@pytest.mark.parametrize(
    ("plan", "attempts", "status", "error"),
    [
        ([503, 503, 503], 3, 503, "HTTP 503"),
        ([500, 503, 200], 3, None, None),
        ([404], 1, 404, "HTTP 404"),
        ([429, 408, 400], 3, 400, "HTTP 400"),
        (["slow", "slow", "slow"], 3, None, "no answer within 0.5s"),
    ],
)
async def test_webhook_failures_are_retried_then_dead_lettered(
    tmp_path: Path, plan: list[int | str], attempts: int, status: int | None, error: str | None
) -> None:
    async with (
        receiver(plan) as (hook, got),
        service(tmp_path, ROUTES.format(hook=hook, mode="binary")) as svc,
    ):
        answer = await svc.client.post(
            "/events",
            content=json.dumps(structured(1, amount=1000)),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert answer.status_code == 202
        await got.wait_for(attempts)
        await svc.settle()
        dead = await svc.records("orders.dead")
        outcomes = dict(svc.gateway.sender.outcomes)
    assert len(got.requests) == attempts
    if error is None:
        assert dead == []
        assert outcomes[("webhook", "delivered")] == 1
        return
    assert len(dead) == 1
    letter = dead[0].envelope.payload
    assert (letter["attempts"], letter["status"], letter["error"]) == (attempts, status, error)
    assert letter["route"] == "big"
    assert letter["event"]["id"] == "ev-1"
    assert outcomes[("webhook", "dead_lettered")] == 1


async def test_a_webhook_that_is_down_is_dead_lettered_with_the_connection_error(
    tmp_path: Path,
) -> None:
    async with receiver() as (hook, _):
        pass  # the receiver is stopped: its port refuses connections now
    async with service(tmp_path, ROUTES.format(hook=hook, mode="binary")) as svc:
        await svc.client.post(
            "/events",
            content=json.dumps(structured(1, amount=1000)),
            headers={"content-type": "application/cloudevents+json"},
        )
        await svc.settle()
        dead = await svc.records("orders.dead")
    assert len(dead) == 1
    assert dead[0].envelope.payload["attempts"] == 3
    assert dead[0].envelope.payload["status"] is None
    assert "ConnectError" in dead[0].envelope.payload["error"]


SECURED = """\
http:
  max_body: 2KiB
  tokens:
    - {name: shop, token_env: TEST_SHOP_TOKEN, publish: ["orders.>"], subscribe: ["orders.>"]}
  rate_limit: {rate: 1, burst: 3}
routes: []
"""


async def test_tokens_body_limit_and_rate_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SHOP_TOKEN", "s3cret")
    ce = {"content-type": "application/cloudevents+json"}
    async with service(tmp_path, SECURED) as svc:
        post = svc.client.post
        missing = await post("/events", content=json.dumps(structured(1)), headers=ce)
        wrong = await post(
            "/events",
            content=json.dumps(structured(1)),
            headers={**ce, "authorization": "Bearer nope"},
        )
        good = {**ce, "authorization": "Bearer s3cret"}
        scope = await post("/events", content=json.dumps(structured(1, "users.new")), headers=good)
        big = await post("/events", content=json.dumps(structured(1, pad="x" * 3000)), headers=good)

        async def chunks() -> object:
            for _ in range(100):
                yield b"x" * 1024

        streamed = await post("/events", content=chunks(), headers=good)  # type: ignore[arg-type]
        accepted = [
            (await post("/events", content=json.dumps(structured(n)), headers=good)).status_code
            for n in range(3)
        ]
        limited = await post("/events", content=json.dumps(structured(9)), headers=good)
        sse_scope = await svc.client.get("/events?topic=users.>", headers=good)
        stored = await svc.records()
    for answer, status in ((missing, 401), (wrong, 401), (scope, 403), (big, 413), (streamed, 413)):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == status
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "users.new" in scope.json()["detail"]
    assert accepted == [202, 202, 202]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert sse_scope.status_code == 403
    assert [r.envelope.id for r in stored] == ["ev-0", "ev-1", "ev-2"]


@pytest.mark.parametrize(
    ("event", "attribute"),
    [
        ({"specversion": "1.0", "source": "s", "type": "t"}, "id"),
        ({"specversion": "1.0", "id": "1", "type": "t"}, "source"),
        ({"specversion": "1.0", "id": "1", "source": "s"}, "type"),
        ({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}, "specversion"),
        ({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "noon"}, "time"),
        # found by schemathesis: a time past int64 nanoseconds was a 500 (SQLite overflow)
        (
            {
                "specversion": "1.0",
                "id": "1",
                "source": "s",
                "type": "t",
                "time": "9999-01-01T00:00:00Z",
            },
            "time",
        ),
        ({"specversion": "1.0", "id": "1", "source": "s", "type": "a..b"}, "type"),
        ("not json", "body"),
    ],
)
async def test_malformed_cloudevents_get_400_naming_the_attribute(
    tmp_path: Path, event: object, attribute: str
) -> None:
    body = event if isinstance(event, str) else json.dumps(event)
    async with service(tmp_path, "routes: []\n") as svc:
        answer = await svc.client.post(
            "/events", content=body, headers={"content-type": "application/cloudevents+json"}
        )
        binary = await svc.client.post(
            "/events", content=b"{}", headers={"ce-id": "1", "ce-source": "s", "ce-type": "t"}
        )
        assert await svc.records() == []
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["attribute"] == attribute
    assert attribute in answer.json()["detail"]
    assert binary.json()["attribute"] == "specversion"


async def test_server_sent_events_resume_from_last_event_id(tmp_path: Path) -> None:
    async with service(tmp_path, "routes: []\n") as svc:
        for n in range(1, 4):
            await svc.client.post(
                "/events",
                content=json.dumps(structured(n, "orders.placed" if n != 2 else "users.new")),
                headers={"content-type": "application/cloudevents+json"},
            )

        async def first_events(count: int, **headers: str) -> list[tuple[str, str]]:
            found: list[tuple[str, str]] = []
            async with svc.client.stream(
                "GET", "/events?topic=orders.>&after=0", headers=headers
            ) as answer:
                assert answer.headers["content-type"].startswith("text/event-stream")
                event_id = ""
                async for line in answer.aiter_lines():
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        found.append((event_id, json.loads(line[6:])["id"]))
                        if len(found) == count:
                            return found
            return found

        everything = await asyncio.wait_for(first_events(2), 10)
        resumed = await asyncio.wait_for(first_events(1, **{"last-event-id": "1"}), 10)
    assert everything == [("1", "ev-1"), ("3", "ev-3")]
    assert resumed == [("3", "ev-3")]


async def test_config_health_readiness_metrics_and_openapi(tmp_path: Path) -> None:
    config = ROUTES.format(hook="http://127.0.0.1:9/x", mode="binary")
    # Without the file watcher, which would reload the rewritten file too (a second
    # rejection, when it sees the change before the metrics are read).
    async with service(tmp_path, config, watch=False) as svc:
        (tmp_path / "gateway.yaml").write_text("routes: [{name: x, from: a, when: 'nope', to: []}]")
        assert not await svc.gateway.reload()
        config = (await svc.client.get("/config")).json()
        health = await svc.client.get("/healthz")
        ready = await svc.client.get("/readyz")
        metrics = (await svc.client.get("/metrics")).text
        spec = (await svc.client.get("/openapi.json")).json()
        missing = await svc.client.get("/nowhere")
    assert config["generation"] == 1
    assert [r["name"] for r in config["config"]["routes"]] == ["big", "small"]
    assert "gateway.yaml:1:35" in config["last_error"]
    assert "unknown attribute(s) nope" in config["last_error"]
    assert health.status_code == 200
    assert ready.json()["status"] == "ready"
    assert 'tidings_config_reloads_total{result="rejected"} 1.0' in metrics
    assert "tidings_config_generation 1.0" in metrics
    assert set(spec["paths"]) >= {"/events", "/config", "/healthz", "/readyz", "/metrics"}
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_not_ready_before_start(tmp_path: Path) -> None:
    import tidings
    from tidings.gateway import Gateway, load_config
    from tidings.server.app import create_app

    async with tidings.Bus(store="memory://") as bus:
        gateway = Gateway(bus, load_config())
        async with serving(create_app(gateway)) as url, httpx.AsyncClient(base_url=url) as client:
            ready = await client.get("/readyz")
            post = await client.post(
                "/events",
                content=json.dumps(structured(1)),
                headers={"content-type": "application/cloudevents+json"},
            )
        await gateway.stop(1)
    assert ready.status_code == 503
    assert post.status_code == 503


class _Seen:
    """A pass-through ASGI middleware noting the paths it saw."""

    def __init__(self, app: Any, paths: list[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope.get("path", ""))
        await self.app(scope, receive, send)


async def test_post_events_answers_alike_with_and_without_the_middleware_stack() -> None:
    """``POST /events`` is served straight from the ASGI scope unless middleware was added;
    both ways give the same answers, an unexpected failure included (a 500 problem)."""
    import tidings
    from tidings.gateway import Gateway, load_config
    from tidings.server.app import create_app

    good = json.dumps(structured(1))
    bad = json.dumps({"specversion": "1.0", "source": "s", "type": "orders.placed"})
    kind = {"content-type": "application/cloudevents+json"}
    repeated = [
        ("ce-specversion", "1.0"),
        ("ce-id", "repeated-1"),
        ("ce-source", "s"),
        ("ce-type", "not a topic"),
        ("ce-type", "orders.placed"),
        ("content-type", "application/json"),
    ]
    answers: dict[str, list[tuple[int, str, Any]]] = {}
    seen: list[str] = []
    async with tidings.Bus(store="memory://") as bus:
        gateway = Gateway(bus, load_config(), watch=False)
        await gateway.start()
        plain, wrapped = create_app(gateway), create_app(gateway)
        wrapped.add_middleware(_Seen, paths=seen)
        for name, app in (("plain", plain), ("wrapped", wrapped)):
            async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
                replies = [
                    await client.post("/events", content=good, headers=kind),
                    await client.post("/events", content=bad, headers=kind),
                    # A repeated attribute header: read as Starlette's Headers read it.
                    await client.post("/events", content=b"{}", headers=repeated),
                ]
                accept = gateway.accept

                async def broken(envelopes: Any) -> list[int]:
                    raise RuntimeError("the log went away")

                gateway.accept = broken  # type: ignore[method-assign]
                try:
                    replies.append(await client.post("/events", content=good, headers=kind))
                finally:
                    gateway.accept = accept  # type: ignore[method-assign]
            answers[name] = [(r.status_code, r.headers["content-type"], r.json()) for r in replies]
        await gateway.stop(1)
    assert answers["plain"] == answers["wrapped"]
    statuses = [status for status, _, _ in answers["plain"]]
    assert statuses == [202, 400, 202, 500]
    assert answers["plain"][0][2]["ids"] == [structured(1)["id"]]
    assert answers["plain"][1][1] == "application/problem+json"
    assert answers["plain"][1][2]["attribute"] == "id"
    assert answers["plain"][2][2]["ids"] == ["repeated-1"]
    assert answers["plain"][3][1] == "application/problem+json"
    assert answers["plain"][3][2]["detail"] == "internal error: RuntimeError"
    assert seen.count("/events") == 4  # the wrapped app's requests went through Starlette
