"""The gateway's routing in-process: a YAML route with a CEL condition and redaction,
fed one CloudEvent: ``python examples/gateway_in_process.py``.
Needs ``pip install 'tidings[gateway]'``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import tidings
from tidings.gateway import Gateway, load_config
from tidings.transports.http import decode_request

ROUTES = """
routes:
  - name: big-orders
    from: orders.placed
    when: data.amount > 100
    redact: [data.card_number]
    to: [{topic: audit.big-orders}]
"""


async def main(directory: Path) -> None:
    config = directory / "gateway.yaml"
    config.write_text(ROUTES)
    async with tidings.Bus(store=f"sqlite:///{directory / 'events.db'}") as bus:
        audited: list[object] = []
        bus.subscribe("audit.big-orders", audited.append)
        gateway = Gateway(bus, load_config([config]), paths=[config])
        await gateway.start()
        for order_id, amount in (("o1", 50), ("o2", 250)):
            events = decode_request(  # as the HTTP server decodes a binary-mode POST
                {
                    "ce-specversion": "1.0",
                    "ce-id": order_id,
                    "ce-source": "shop",
                    "ce-type": "orders.placed",
                    "content-type": "application/json",
                },
                f'{{"order_id": "{order_id}", "amount": {amount}, "card_number": "4242"}}'.encode(),
            )
            [position] = await gateway.accept(events)  # durable, then routed
            assert await gateway.wait_routed(position, timeout=30)
        await gateway.stop()
    print(audited)  # only o2, without its card number
    assert audited == [{"order_id": "o2", "amount": 250}]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
