"""Reloads under load: events posted without pause while the config is rewritten 20 times,
valid and invalid versions alternating. Every accepted event is routed exactly once, by the
table in force when it was accepted; none lost, none doubled."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from .conftest import service, structured

VALID = "routes: [{{name: copy, from: load.>, to: [{{topic: out.v{version}}}]}}]\n"
BATCH = 400
INVALID = "routes: [{name: copy, from: load.>, when: 'data.n >', to: [{topic: out.bad}]}]\n"


async def test_every_accepted_event_is_routed_once_by_the_table_in_force(tmp_path: Path) -> None:
    async with service(tmp_path, VALID.format(version=0)) as svc:
        gateway = svc.gateway
        done = asyncio.Event()
        windows: dict[str, tuple[int, int]] = {}  # id -> generations before/after its POST
        refused: list[int] = []

        async def post() -> None:
            deadline = time.monotonic() + 60
            for start in range(0, 60 * BATCH, BATCH):  # at most 60 batches
                if done.is_set() or time.monotonic() > deadline:
                    return
                batch = [structured(n, "load.tick") for n in range(start, start + BATCH)]
                before = gateway.table.generation
                answer = await svc.client.post(
                    "/events",
                    content=json.dumps(batch),
                    headers={"content-type": "application/cloudevents-batch+json"},
                )
                if answer.status_code != 202:
                    refused.append(answer.status_code)
                    continue
                after = gateway.table.generation
                windows.update({event["id"]: (before, after) for event in batch})

        async def rewrite() -> list[bool]:
            results = []
            for version in range(1, 21):
                text = VALID.format(version=version) if version % 2 == 0 else INVALID
                # written whole (rename), as a deployment should: the watcher reloads too
                (tmp_path / "next.tmp").write_text(text)
                os.replace(tmp_path / "next.tmp", tmp_path / "gateway.yaml")
                results.append(await gateway.reload())
                await asyncio.sleep(0.02)
            done.set()
            return results

        poster = asyncio.create_task(post())
        results = await asyncio.wait_for(rewrite(), 60)
        await asyncio.wait_for(poster, 60)
        await svc.settle(30)
        copies = list(await svc.records("out.>"))
    assert results == [version % 2 == 0 for version in range(1, 21)]
    assert refused == []
    assert len(windows) >= 10 * BATCH
    routed = [(r.envelope.id, t) for r, t, _ in svc.routed if r.envelope.topic == "load.tick"]
    assert sorted(eid for eid, _ in routed) == sorted(windows)  # each once, none lost
    for eid, table in routed:
        low, high = windows[eid]
        assert low <= table.generation <= high, (eid, table.generation, windows[eid])
    by_id = dict(routed)
    expected = sorted((f"ev-{r.envelope.payload['n']}", r.envelope.topic) for r in copies)
    assert expected == sorted(
        (eid, table.config.routes[0].to[0].address) for eid, table in by_id.items()
    )
    assert "out.bad" not in {topic for _, topic in expected}
