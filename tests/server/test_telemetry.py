"""The gateway's per-route and per-source metrics, read back with the Prometheus client's own
parser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
from prometheus_client.parser import text_string_to_metric_families

from tidings.testing.brokers import Mosquitto

from .conftest import service, structured

WAIT = 30.0

CONFIG = """\
routes:
  - name: dead
    from: orders.placed
    when: data.amount > 100
    to: [{webhook: "http://127.0.0.1:9/hook", timeout: 1s, retry: {max_attempts: 1}}]
  - name: fine
    from: orders.placed
    to: [{topic: audit.fine}]
  - name: ab
    from: tx.>
    split:
      by: key
      variants:
        - {name: a, percent: 50, to: [{topic: ab.a}]}
        - {name: b, percent: 50, to: [{topic: ab.b}]}
"""


async def test_per_route_dispatches_dead_letters_variants_and_latency_histograms(
    tmp_path: Path,
) -> None:
    events = [structured(i, amount=500 if i < 3 else 5) for i in range(10)]
    events += [{**structured(100 + i, topic="tx.card"), "partitionkey": f"k{i}"} for i in range(8)]
    async with service(tmp_path, CONFIG) as svc:
        answer = await svc.client.post(
            "/events",
            content=json.dumps(events),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert answer.status_code == 202
        await svc.settle()
        text = (await svc.client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("tidings_gateway_route_dispatches_total", route="dead", result="error") == 3
    assert value("tidings_gateway_route_dispatches_total", route="fine", result="ok") == 7
    assert value("tidings_gateway_route_dead_letters_total", route="dead") == 3
    assert (
        value("tidings_gateway_route_variants_total", route="ab", variant="a")
        + value("tidings_gateway_route_variants_total", route="ab", variant="b")
        == 8
    )
    assert value("tidings_gateway_route_latency_seconds_count", route="fine") == 7
    assert value("tidings_gateway_route_latency_seconds_bucket", route="fine", le="+Inf") == 7
    bounds = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "tidings_gateway_route_latency_seconds_bucket" and dict(labels)["route"] == "ab"
    )
    counts = [v for _, v in bounds]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == 8


async def test_broker_sources_counts_are_in_metrics_and_config(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """An MQTT source takes 3 good messages and 1 whose topic names no tidings topic
    (dead-lettered), then its broker restarts (one reconnect): ``GET /config`` lists the
    source with those exact counts, and ``/metrics`` has them as
    ``tidings_gateway_source_*`` (read back with the Prometheus client's parser)."""
    config = f"""\
sources:
  - {{mqtt: "{mosquitto.url}", subscribe: ["sensors/#"], wrap_type: sensors.raw}}
routes:
  - {{name: keep, from: sensors.>, to: [{{topic: audit.sensors}}]}}
"""
    async with service(tmp_path, config) as svc:

        async def source_when(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
            """The source's entry in ``GET /config``, once ``check`` holds for it."""
            async with asyncio.timeout(WAIT):
                while True:
                    answer = await svc.client.get("/config")
                    assert answer.status_code == 200
                    sources: list[dict[str, Any]] = answer.json()["sources"]
                    assert len(sources) == 1
                    if check(sources[0]):
                        return sources[0]
                    await asyncio.sleep(0.02)

        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as device:
            for i in range(3):
                await device.publish("sensors/t1", json.dumps({"i": i}).encode(), qos=1)
            await device.publish("sensors/not a name", b"{}", qos=1)
        await source_when(lambda s: s["acknowledged"] >= 4)
        await asyncio.to_thread(mosquitto.stop)
        await source_when(lambda s: not s["connected"])
        await asyncio.to_thread(mosquitto.start)
        found = await source_when(lambda s: s["connected"])
        text = (await svc.client.get("/metrics")).text
    assert found["name"] == "source-0-mqtt"
    assert found["protocol"] == "mqtt"
    assert found["url"] == mosquitto.url
    expected = {"received": 4, "accepted": 3, "dead_lettered": 1, "acknowledged": 4}
    assert {name: found[name] for name in expected} == expected
    assert (found["retried"], found["reconnects"]) == (0, 1)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = {"source": "source-0-mqtt", "kind": "mqtt"}
    for outcome, count in {**expected, "ack_failed": 0, "retried": 0}.items():
        key = tuple(sorted({**labels, "outcome": outcome}.items()))
        assert samples[("tidings_gateway_source_messages_total", key)] == count
    assert samples[("tidings_gateway_source_reconnects_total", tuple(sorted(labels.items())))] == 1
    assert samples[("tidings_gateway_source_connected", tuple(sorted(labels.items())))] == 1
