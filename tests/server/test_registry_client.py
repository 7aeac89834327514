"""The HTTP registry client: loads from the gateway's /registry, a clear error when the
registry is unreachable at start, the cached schemas (and a warning) when it goes away."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest

from tidings.contracts import RegistryUnavailableError, SchemaViolationError, Validator
from tidings.contracts.client import RegistryClient
from tidings.event import Envelope

from .conftest import service

CONFIG = "http: {listen: 127.0.0.1:0}\nschemas: {registry: true}\nroutes: []\n"
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_unreachable_at_start_is_a_clear_error() -> None:
    with (
        RegistryClient(f"http://127.0.0.1:{_closed_port()}/registry", timeout=2) as client,
        pytest.raises(RegistryUnavailableError, match="cannot be read"),
    ):
        client.load()


async def test_mid_run_the_cached_schemas_stay_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with service(tmp_path, CONFIG) as svc:
        made = await svc.client.post(
            "/registry/subjects/shop.count-value/versions",
            json={"schema": json.dumps(SCHEMA), "schemaType": "JSON"},
        )
        assert made.status_code == 200, made.text
        client = RegistryClient(f"{svc.url}/registry", timeout=2)
        await asyncio.to_thread(client.load)
    # the gateway is gone now
    with caplog.at_level(logging.WARNING, logger="tidings.contracts"):
        await asyncio.to_thread(client.refresh)
    client.close()
    assert client.stale_since is not None
    assert "validating with the schemas of 1 subjects cached before" in caplog.text
    validator = Validator(client)
    validator.check(Envelope("shop.count", {"n": 1}, 1))
    with pytest.raises(SchemaViolationError, match="required"):
        validator.check(Envelope("shop.count", {}, 1))
