"""``tidings asyncapi``: documents of an application and of a gateway config, judged by the
official AsyncAPI 3.0.0 JSON Schema (npm's ``@asyncapi/specs``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from tidings.contracts.registry import SchemaRegistry
from tidings.store.sqlite import SQLiteStore

APP = '''
import dataclasses
from typing import Annotated, Literal

import msgspec
import tidings


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    qty: int = 1


@tidings.event("shop.orders.placed", version=2)
@dataclasses.dataclass(frozen=True)
class OrderPlaced:
    """An order was placed."""

    order_id: str
    amount: Annotated[float, msgspec.Meta(ge=0)]
    lines: list[Line]
    status: Literal["new", "paid"] = "new"
    note: str | None = None


@tidings.event("shop.payments.made")
class PaymentMade(msgspec.Struct, frozen=True):
    payment_id: str
    cents: int


bus = tidings.Bus()


@bus.on(OrderPlaced)
def audit(event: OrderPlaced) -> None: ...


@bus.on("shop.>")
def log_all(event: object) -> None: ...
'''

GATEWAY = """\
store: sqlite:///{db}
transport: nats://127.0.0.1:4222
schemas: {{registry: true, validate: true}}
http:
  listen: 127.0.0.1:8099
  tokens:
    - {{name: shop, token_env: SHOP_TOKEN, publish: ["shop.>"]}}
routes:
  - name: big
    from: shop.orders.placed
    when: data.amount > 100
    to:
      - topic: audit.big
      - webhook: http://127.0.0.1:9000/hook
      - nats: legacy.orders
  - name: ab
    from: [shop.payments.made]
    split:
      by: random
      variants:
        - {{percent: 50, to: [{{topic: scoring.v1}}]}}
        - {{percent: 50, to: [{{topic: scoring.v2}}]}}
"""


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings.cli", "asyncapi", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def test_an_application_document_is_valid_asyncapi_3(
    tmp_path: Path, asyncapi_validator: Any
) -> None:
    (tmp_path / "shopapp.py").write_text(textwrap.dedent(APP))
    done = run_cli(tmp_path, "shopapp:bus", "-o", "doc.yaml")
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load((tmp_path / "doc.yaml").read_text())
    assert errors(asyncapi_validator, doc) == []
    assert doc["asyncapi"] == "3.0.0"
    channels = {c["address"]: c for c in doc["channels"].values()}
    assert set(channels) == {"shop.orders.placed", "shop.payments.made", "shop.>"}
    actions = sorted((op["action"], op["channel"]["$ref"]) for op in doc["operations"].values())
    assert actions == [
        ("receive", "#/channels/shop.all"),
        ("receive", "#/channels/shop.orders.placed"),
        ("send", "#/channels/shop.orders.placed"),
        ("send", "#/channels/shop.payments.made"),
    ]
    message = doc["components"]["messages"]["OrderPlaced"]
    assert message["payload"]["required"] == ["order_id", "amount", "lines"]
    assert message["payload"]["properties"]["amount"] == {"type": "number", "minimum": 0}
    assert message["payload"]["properties"]["lines"]["items"] == {
        "$ref": "#/components/schemas/Line"
    }
    assert message["x-tidings-dataschema"] == "tidings:schemas/shop.orders.placed/versions/2"
    assert "ce-dataschema" in message["headers"]["properties"]
    assert doc["components"]["schemas"]["Line"]["required"] == ["sku"]
    printed = run_cli(tmp_path, "shopapp")  # a module alone: its classes, JSON on stdout
    assert printed.returncode == 0, printed.stderr
    assert errors(asyncapi_validator, json.loads(printed.stdout)) == []


def test_a_gateway_document_is_valid_asyncapi_3_with_registered_schemas(
    tmp_path: Path, asyncapi_validator: Any
) -> None:
    db = tmp_path / "events.db"
    schema = {
        "type": "object",
        "properties": {"payment_id": {"type": "string"}},
        "required": ["payment_id"],
    }

    async def register() -> None:
        async with SQLiteStore(db) as store:
            await SchemaRegistry(store).register("shop.payments.made-value", schema)

    asyncio.run(register())
    (tmp_path / "gateway.yaml").write_text(GATEWAY.format(db=db))
    done = run_cli(tmp_path, "gateway.yaml")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert errors(asyncapi_validator, doc) == []
    assert doc["servers"]["gateway"]["host"] == "127.0.0.1:8099"
    assert doc["servers"]["gateway"]["protocol"] == "http"
    assert doc["servers"]["nats"] == {
        "host": "127.0.0.1:4222",
        "protocol": "nats",
        "description": "the gateway's transport",
    }
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        "shop.>",
        "shop.orders.placed",
        "shop.payments.made",
        "audit.big",
        "legacy.orders",
        "scoring.v1",
        "scoring.v2",
        ">",
    }
    payments = doc["channels"]["shop.payments.made"]["messages"]
    [ref] = payments.values()
    key = ref["$ref"].rsplit("/", 1)[1]
    assert doc["components"]["messages"][key]["payload"] == schema
    sends = sorted(
        op["channel"]["$ref"] for op in doc["operations"].values() if op["action"] == "send"
    )
    assert sends == [
        "#/channels/all",
        "#/channels/audit.big",
        "#/channels/legacy.orders",
        "#/channels/scoring.v1",
        "#/channels/scoring.v2",
    ]


def test_the_oracle_refuses_a_broken_document(asyncapi_validator: Any) -> None:
    broken = {
        "asyncapi": "3.0.0",
        "info": {"title": "x", "version": "1"},
        "operations": {"o": {"action": "fly", "channel": {"$ref": "#/channels/c"}}},
    }
    assert errors(asyncapi_validator, broken)


def test_an_unknown_target_is_a_clear_error(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "no_such_module_here")
    assert done.returncode != 0
    assert "cannot import 'no_such_module_here'" in done.stderr
