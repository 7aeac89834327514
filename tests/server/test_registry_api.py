"""The registry's REST API, judged by a real client of Confluent's API (the schema-registry
client of ``confluent-kafka``), and schema validation of ``POST /events``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from .conftest import receiver, service, structured

CONFIG = """\
http: {listen: 127.0.0.1:0}
schemas: {registry: true, validate: true, compatibility: BACKWARD}
routes: []
"""

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "amount": {"type": "number", "minimum": 0},
        "note": {"type": "string"},
    },
    "required": ["n", "amount"],
}

AVRO_V1 = {
    "type": "record",
    "name": "Payment",
    "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "double"}],
}


def _client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": f"{url}/registry"})


async def test_confluent_client_registers_reads_and_checks(tmp_path: Path) -> None:
    async with service(tmp_path, CONFIG) as svc:
        client = _client(svc.url)

        def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            first = client.register_schema("orders.placed-value", Schema(json.dumps(ORDER), "JSON"))
            out["again"] = client.register_schema(
                "orders.placed-value", Schema(json.dumps(ORDER), "JSON")
            )
            out["first"] = first
            out["by_id"] = client.get_schema(first)
            out["latest"] = client.get_latest_version("orders.placed-value")
            v2 = {**ORDER, "properties": {**ORDER["properties"], "currency": {"type": "string"}}}
            out["v2_ok"] = client.test_compatibility(
                "orders.placed-value", Schema(json.dumps(v2), "JSON")
            )
            out["v2"] = client.register_schema(
                "orders.placed-value", Schema(json.dumps(v2), "JSON")
            )
            bad = {**v2, "required": ["n", "amount", "currency"]}
            out["bad_ok"] = client.test_compatibility(
                "orders.placed-value", Schema(json.dumps(bad), "JSON")
            )
            try:
                client.register_schema("orders.placed-value", Schema(json.dumps(bad), "JSON"))
            except SchemaRegistryError as exc:
                out["refused"] = exc
            out["versions"] = client.get_versions("orders.placed-value")
            out["v1"] = client.get_version("orders.placed-value", 1)
            out["lookup"] = client.lookup_schema(
                "orders.placed-value", Schema(json.dumps(ORDER), "JSON")
            )
            out["avro"] = client.register_schema("payments-value", Schema(json.dumps(AVRO_V1)))
            out["same_id"] = client.register_schema("refunds-value", Schema(json.dumps(AVRO_V1)))
            out["set"] = client.set_compatibility("payments-value", "FULL_TRANSITIVE")
            out["mode"] = client.get_compatibility("payments-value")
            out["default"] = client.get_compatibility()
            out["subjects"] = client.get_subjects()
            for name, call in (
                ("no_subject", lambda: client.get_latest_version("nothing-value")),
                ("no_version", lambda: client.get_version("orders.placed-value", 9)),
                ("no_id", lambda: client.get_schema(987654)),
                ("bad_schema", lambda: client.register_schema(
                    "x-value", Schema('{"type": "nonsense"}', "JSON"))),
                ("bad_mode", lambda: client.set_compatibility("x-value", "SIDEWAYS")),
            ):  # fmt: skip
                try:
                    call()
                except SchemaRegistryError as exc:
                    out[name] = exc
            return out

        try:
            out = await asyncio.to_thread(scenario)
        finally:
            client.close()
        assert out["again"] == out["first"]
        assert json.loads(out["by_id"].schema_str) == ORDER
        assert out["by_id"].schema_type == "JSON"
        assert out["latest"].version == 1
        assert out["v2_ok"] is True
        assert out["v2"] != out["first"]
        assert out["bad_ok"] is False
        refused = out["refused"]
        assert refused.http_status_code == 409
        assert "required-field-added" in refused.error_message
        assert "$.currency" in refused.error_message
        assert out["versions"] == [1, 2]
        assert out["v1"].schema_id == out["first"]
        assert out["lookup"].version == 1
        assert out["same_id"] == out["avro"]
        assert out["set"] == {"compatibility": "FULL_TRANSITIVE"}
        assert out["mode"] == "FULL_TRANSITIVE"
        assert out["default"] == "BACKWARD"
        assert out["subjects"] == ["orders.placed-value", "payments-value", "refunds-value"]
        assert (out["no_subject"].http_status_code, out["no_subject"].error_code) == (404, 40401)
        assert (out["no_version"].http_status_code, out["no_version"].error_code) == (404, 40402)
        assert (out["no_id"].http_status_code, out["no_id"].error_code) == (404, 40403)
        assert (out["bad_schema"].http_status_code, out["bad_schema"].error_code) == (422, 42201)
        assert (out["bad_mode"].http_status_code, out["bad_mode"].error_code) == (422, 42203)


async def test_post_events_refuses_an_event_breaking_its_schema(tmp_path: Path) -> None:
    async with service(tmp_path, CONFIG) as svc:
        with _client(svc.url) as client:
            await asyncio.to_thread(
                client.register_schema, "orders.placed-value", Schema(json.dumps(ORDER), "JSON")
            )
        ok = await svc.client.post(
            "/events",
            json=structured(1, amount=5),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert ok.status_code == 202, ok.text
        bad = await svc.client.post(
            "/events",
            json=structured(2, amount=-1),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert bad.status_code == 400
        body = bad.json()
        assert (body["field"], body["rule"], body["topic"]) == (
            "$.amount",
            "minimum",
            "orders.placed",
        )
        assert "minimum" in body["detail"]
        assert "$.amount" in body["detail"]
        missing = await svc.client.post(
            "/events",
            json={**structured(3), "data": {"n": 3}},
            headers={"content-type": "application/cloudevents+json"},
        )
        assert missing.status_code == 400
        assert (missing.json()["field"], missing.json()["rule"]) == ("$.amount", "required")
        other = await svc.client.post(  # a topic with no registered schema is not checked
            "/events",
            json=structured(4, topic="audit.x"),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert other.status_code == 202
        records = await svc.records("orders.placed")
        assert [r.envelope.id for r in records] == ["ev-1"]
        metrics = (await svc.client.get("/metrics")).text
        assert (
            'tidings_schema_violations_total{boundary="http",topic="orders.placed"} 2.0' in metrics
        )


async def test_registry_api_uses_the_gateway_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP", "shop-secret")
    config = CONFIG.replace(
        "http: {listen: 127.0.0.1:0}",
        "http:\n  listen: 127.0.0.1:0\n  tokens: [{name: shop, token_env: SHOP, "
        "publish: ['orders.>']}]",
    )
    async with service(tmp_path, config) as svc:
        body = {"schema": json.dumps(ORDER), "schemaType": "JSON"}
        anonymous = await svc.client.get("/registry/subjects")
        assert anonymous.status_code == 401
        auth = {"authorization": "Bearer shop-secret"}
        made = await svc.client.post(
            "/registry/subjects/orders.placed-value/versions", json=body, headers=auth
        )
        assert made.status_code == 200, made.text
        foreign = await svc.client.post(
            "/registry/subjects/payments-value/versions", json=body, headers=auth
        )
        assert foreign.status_code == 403
        with SchemaRegistryClient(
            {"url": f"{svc.url}/registry", "basic.auth.user.info": "shop:shop-secret"}
        ) as basic:
            assert await asyncio.to_thread(basic.get_subjects) == ["orders.placed-value"]


async def test_malformed_requests_get_confluent_errors(tmp_path: Path) -> None:
    async with service(tmp_path, CONFIG) as svc:
        base = "/registry/subjects/orders.placed-value/versions"
        cases = [
            (await svc.client.post(base, content=b"{nope"), 422, 42201),
            (await svc.client.post(base, json={"schemaType": "JSON"}), 422, 42201),
            (
                await svc.client.post(
                    base,
                    json={"schema": "{}", "schemaType": "JSON", "references": [{"name": "x"}]},
                ),
                422,
                42201,
            ),
            (await svc.client.post(base, json={"schema": "{}", "schemaType": "XML"}), 422, 42201),
            (await svc.client.get(f"{base}/abc"), 422, 42202),
            (await svc.client.get("/registry/schemas/ids/abc"), 404, 40403),
            (await svc.client.get("/registry/config/orders.placed-value"), 404, 40408),
        ]
        for response, status, code in cases:
            assert (response.status_code, response.json()["error_code"]) == (status, code), (
                response.text
            )
        assert (await svc.client.delete(base)).status_code == 405


async def test_registrations_are_internal_events(tmp_path: Path) -> None:
    """Registrations are kept on ``tidings.schemas.*``, internal topics: a route from ``>``
    and an event stream of ``>`` do not see them; a stream of that topic does. The API is
    listed in ``/openapi.json`` and the index."""
    async with receiver() as (hook, got):
        config = CONFIG.replace(
            "routes: []", f"routes: [{{name: all, from: '>', to: [{{webhook: {hook}}}]}}]"
        )
        async with service(tmp_path, config) as svc:
            registered = await svc.client.post(
                "/registry/subjects/orders.placed-value/versions",
                json={"schema": json.dumps(ORDER), "schemaType": "JSON"},
            )
            assert registered.status_code == 200, registered.text
            mode = await svc.client.put("/registry/config", json={"compatibility": "FULL"})
            assert mode.status_code == 200, mode.text
            posted = await svc.client.post(
                "/events",
                json=structured(1, amount=5),
                headers={"content-type": "application/cloudevents+json"},
            )
            assert posted.status_code == 202, posted.text
            await svc.settle()
            await got.wait_for(1)
            internal = await svc.records("tidings.schemas.>")
            assert sorted(r.envelope.topic for r in internal) == [
                "tidings.schemas.compatibility",
                "tidings.schemas.registered",
            ]
            assert [headers.get("ce-id") for headers, _ in got.requests] == ["ev-1"]
            assert {r.envelope.topic for r, _, d in svc.routed if d} == {"orders.placed"}

            async def stream(topic: str, until: str) -> list[str]:
                seen: list[str] = []
                async with (
                    asyncio.timeout(15),
                    svc.client.stream(
                        "GET", "/events", params={"topic": topic, "after": 0}
                    ) as answer,
                ):
                    async for line in answer.aiter_lines():
                        if line.startswith("event: "):
                            seen.append(line.removeprefix("event: "))
                            if seen[-1] == until:
                                return seen
                return seen

            assert await stream(">", "orders.placed") == ["orders.placed"]
            assert await stream("tidings.schemas.registered", "tidings.schemas.registered") == [
                "tidings.schemas.registered"
            ]
            index = (await svc.client.get("/", headers={"accept": "application/json"})).json()
            assert "/registry" in index["endpoints"]
            paths = (await svc.client.get("/openapi.json")).json()["paths"]
            assert "/registry/subjects/{subject}/versions" in paths
