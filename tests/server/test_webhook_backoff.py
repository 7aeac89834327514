"""A failing webhook is retried with exponential backoff and jitter: the pause after failed
attempt k is ``backoff * 2**(k-1)`` times a factor drawn in [0.5, 1.5). The draw is pinned
(``random.random``) to each end of its range, and the receiver notes when each attempt
arrives: the gaps are at least the pauses (only lower bounds: a loaded machine adds time,
never removes it)."""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.testing.brokers import wait_until

from .conftest import service, serving, structured

CONFIG = """\
routes:
  - name: hook
    from: orders.placed
    to: [{{webhook: "{hook}", timeout: 5s, retry: {{max_attempts: 4, backoff: 100ms}}}}]
    dead_letter: orders.dead
"""


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.5), (0.999, 1.499)])
async def test_the_pauses_between_attempts_double_and_carry_the_jitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, draw: float, factor: float
) -> None:
    arrivals: list[float] = []

    async def failing(request: Request) -> Response:
        arrivals.append(time.monotonic())
        return Response(status_code=503)

    monkeypatch.setattr(random, "random", lambda: draw)
    app = Starlette(routes=[Route("/hook", failing, methods=["POST"])])
    async with serving(app) as url, service(tmp_path, CONFIG.format(hook=f"{url}/hook")) as svc:
        answer = await svc.client.post(
            "/events",
            content=json.dumps(structured(1)),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert answer.status_code == 202
        await wait_until(lambda: len(arrivals) == 4, timeout=20)
        await svc.settle()
        dead = await svc.records("orders.dead")
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(gaps) == 3
    for gap, pause in zip(gaps, (0.1 * factor, 0.2 * factor, 0.4 * factor), strict=True):
        assert gap >= pause - 0.005, (gaps, draw)  # 5 ms: the clock's and the loop's grain
    assert len(dead) == 1
    assert dead[0].envelope.payload["attempts"] == 4
    assert dead[0].envelope.payload["status"] == 503
