"""``GET /events`` without ``after`` nor ``Last-Event-ID`` streams live: from the end of the
log when the stream opened, so events stored before it are not sent, and those accepted
after it are, in log order, each once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from .conftest import service, structured

CE = {"content-type": "application/cloudevents+json"}


async def test_a_stream_without_a_position_starts_at_the_end_of_the_log(tmp_path: Path) -> None:
    async with service(tmp_path, "routes: []\n") as svc:
        before = await svc.client.post("/events", content=json.dumps(structured(1)), headers=CE)
        assert before.status_code == 202
        got: list[tuple[str, str]] = []
        async with svc.client.stream("GET", "/events", params={"topic": "orders.>"}) as answer:
            # the stream's start is fixed once its headers are in
            assert answer.status_code == 200
            for n in (2, 3, 4):
                topic = "orders.placed" if n != 3 else "users.new"
                posted = await svc.client.post(
                    "/events", content=json.dumps(structured(n, topic)), headers=CE
                )
                assert posted.status_code == 202
            event_id = ""

            async def read_two() -> None:
                nonlocal event_id
                async for line in answer.aiter_lines():
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        got.append((event_id, json.loads(line[6:])["id"]))
                        if len(got) == 2:
                            return

            await asyncio.wait_for(read_two(), 10)
    assert got == [("2", "ev-2"), ("4", "ev-4")]  # not ev-1 (before), not ev-3 (users.new)
