"""Dead letters in-process: a redrive record routed by the follower, and one whose route a
reload removed after it was recorded (dead-lettered again with the reason: nothing lost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.event import Envelope
from tidings.gateway import DEFAULT_DEAD_LETTER, Gateway, load_config
from tidings.gateway.dead_letters import REDRIVE_TOPIC, RedriveError, list_dead_letters, redrive

CONFIG = """\
routes:
  - name: hooked
    from: orders.placed
    to:
      - {webhook: "http://127.0.0.1:9/hook", timeout: 1s, retry: {max_attempts: 1}}
      - {topic: audit.orders}
    dead_letter: orders.dead
"""

WITHOUT = """\
routes:
  - name: other
    from: orders.placed
    to: [{topic: audit.orders}]
"""


def envelope(n: int) -> Envelope[Any]:
    return Envelope("orders.placed", {"n": n}, 1_000_000 + n, source="test", _id=f"e{n}")


async def settle(bus: tidings.Bus, gateway: Gateway) -> None:
    store = bus.store
    assert store is not None
    for _ in range(20):
        last = await store.last_position()
        assert await gateway.wait_routed(last, 10)
        if await store.last_position() == last:
            return
    raise AssertionError("the log kept growing")


async def test_a_redrive_goes_to_the_failed_target_only_and_a_removed_route_dead_letters_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(CONFIG)
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        store = bus.store
        assert store is not None
        gateway = Gateway(bus, load_config([path]))
        await gateway.start()
        try:
            await gateway.accept([envelope(1), envelope(2)])
            await settle(bus, gateway)
            letters = await list_dead_letters(gateway.dead_letters, ["orders.dead"])
            assert len(letters) == 2
            first, second = sorted(int(x["position"]) for x in letters)
            audited = len(await store.read(topic="audit.orders"))

            await redrive(bus, gateway.table, gateway.dead_letters, first, "tester")
            await settle(bus, gateway)
            # the webhook failed again: a new dead letter; the topic target was not repeated
            assert len(await store.read(topic="orders.dead")) == 3
            assert len(await store.read(topic="audit.orders")) == audited

            path.write_text(WITHOUT)
            assert await gateway.reload()
            with pytest.raises(RedriveError, match="a reload removed it"):
                await redrive(bus, gateway.table, gateway.dead_letters, second, "tester")
            # a redrive recorded while the route existed, routed after a reload removed it
            await bus.emit(
                {"dead_letter": second, "route": "hooked", "target": "http://127.0.0.1:9/hook"},
                topic=REDRIVE_TOPIC,
            )
            await settle(bus, gateway)
            again = await store.read(topic=DEFAULT_DEAD_LETTER, unknown="raw")
        finally:
            await gateway.stop(5)
    [letter] = again
    assert letter.envelope.payload["event"]["id"] == "e2"
    assert "route 'hooked' was removed" in letter.envelope.payload["error"]
