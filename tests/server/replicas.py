"""For the tests of several gateway processes (replicas) on one store or broker: their
folders, each with the same config, and the load events posted to them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

__all__ = ("post_load_event", "replica_folders")


def replica_folders(tmp_path: Path, config: str) -> list[Path]:
    """Two replicas' folders, ``tmp_path/a`` and ``tmp_path/b``, each with ``config`` in
    ``g.yaml``."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
        (folder / "g.yaml").write_text(config)
    return folders


async def post_load_event(client: httpx.AsyncClient, url: str, n: int) -> None:
    """POST the structured CloudEvent ``e{n}`` (type ``load.x``, data ``{"n": n}``) to the
    gateway at ``url``; it must answer 202."""
    event = {"specversion": "1.0", "id": f"e{n}", "source": "t", "type": "load.x"}
    answer = await client.post(
        f"{url}/events",
        content=json.dumps({**event, "data": {"n": n}}),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert answer.status_code == 202, answer.text
