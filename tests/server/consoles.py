"""What the console tests share: a config whose webhook can fail, and posting a batch."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Service

HOOKED = """\
routes:
  - name: big
    from: orders.placed
    when: data.amount > 100
    to:
      - {{webhook: "{hook}", timeout: 2s, retry: {{max_attempts: {attempts}, backoff: 10ms}}}}
    dead_letter: orders.dead
  - name: small
    from: orders.placed
    to: [{{topic: audit.small}}]
"""
"""Big orders go to a webhook (``hook``, ``attempts`` attempts), the rest to a topic."""


async def post(svc: Service, events: list[dict[str, Any]]) -> None:
    """POST ``events`` as one CloudEvents batch; it must be accepted."""
    answer = await svc.client.post(
        "/events",
        content=json.dumps(events),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert answer.status_code == 202, answer.text
