"""The gateway's per-route metrics, read back with the Prometheus client's own parser."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .conftest import service, structured

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
