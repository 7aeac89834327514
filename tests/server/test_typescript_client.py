"""The generated TypeScript client, compiled and run under Node against a real gateway:
it publishes a typed event, hears the schema violation of a bad one (400 naming field and
rule), and reads the log back as server-sent events."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import service

APP = """
import dataclasses
import tidings


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str


@tidings.event("shop.orders.placed")
@dataclasses.dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float
    lines: list[Line]
"""

RUN = """\
import { TidingsClient } from "./out/client.js";

const [url, token] = process.argv.slice(2);
const client = new TidingsClient(url, token);
const ok = await client.publish(
  "shop.orders.placed", { order_id: "o1", amount: 5, lines: [{ sku: "a" }] }, { id: "ts-1" });
let refused = null;
try {
  await client.publish("shop.orders.placed", { order_id: "o2", amount: -1, lines: [] }, { id: "ts-2" });
} catch (error) {
  refused = { status: error.status, field: error.problem.field, rule: error.problem.rule };
}
const stop = new AbortController();
const got = [];
for await (const event of client.subscribe("shop.orders.placed", { after: 0, signal: stop.signal })) {
  got.push(event);
  break;
}
stop.abort();
console.log(JSON.stringify({ ok, refused, got }));
process.exit(0);
"""

CONFIG = """\
http:
  listen: 127.0.0.1:0
  tokens: [{name: shop, token_env: TS_SHOP, publish: ["shop.>"]}]
schemas: {registry: true, validate: true}
routes: []
"""

SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
    "required": ["order_id", "amount"],
}


async def test_the_generated_client_runs_against_the_gateway(
    tmp_path: Path,
    tsc: Callable[..., subprocess.CompletedProcess[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "shopapp.py").write_text(textwrap.dedent(APP))
    generated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tidings.cli", "asyncapi", "shopapp", "--typescript", "client.ts",
         "-o", "asyncapi.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    built = await asyncio.to_thread(tsc, tmp_path, "client.ts")
    assert built.returncode == 0, built.stdout
    (tmp_path / "out" / "package.json").write_text('{"type": "module"}')
    (tmp_path / "run.mjs").write_text(RUN)
    node = shutil.which("node")
    assert node is not None  # tsc ran, so node is there
    monkeypatch.setenv("TS_SHOP", "ts-secret")
    async with service(tmp_path, CONFIG, authorization="Bearer ts-secret") as svc:
        made = await svc.client.post(
            "/registry/subjects/shop.orders.placed-value/versions",
            json={"schema": json.dumps(SCHEMA), "schemaType": "JSON"},
        )
        assert made.status_code == 200, made.text
        process = await asyncio.create_subprocess_exec(
            node, "run.mjs", svc.url, "ts-secret", cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["ok"]["ids"] == ["ts-1"]
    assert result["refused"] == {"status": 400, "field": "$.amount", "rule": "minimum"}
    [event] = result["got"]
    assert event["id"] == "ts-1"
    assert event["data"] == {"order_id": "o1", "amount": 5, "lines": [{"sku": "a"}]}
    assert event["dataschema"] == "tidings:schemas/shop.orders.placed/versions/1"
    assert event["source"] == "tidings-ts-client"
