"""TypeScript generated from the AsyncAPI document compiles under ``tsc --strict``, and a
field removed from the Python event class breaks the build of code that uses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from .test_asyncapi import APP

AMOUNT = "amount: Annotated[float, msgspec.Meta(ge=0)]"


USAGE = """\
import { TidingsClient, type OrderPlaced, type Topics } from "./client";

const order: OrderPlaced = {
  order_id: "o1",
  amount: 12.5,
  lines: [{ sku: "a", qty: 2 }, { sku: "b" }],
  status: "paid",
  note: null,
};

export async function main(client: TidingsClient): Promise<number> {
  await client.publish("shop.orders.placed", order, { key: "c1" });
  const total: number = order.amount;
  const topic: keyof Topics = "shop.orders.placed";
  for await (const event of client.subscribe(topic, { after: 0 })) {
    const lines: number = event.data.lines.length;
    return total + lines;
  }
  return total;
}
"""


def _generate(directory: Path, amount: str) -> None:
    directory.mkdir()
    (directory / "shopapp.py").write_text(textwrap.dedent(APP.replace(AMOUNT, amount)))
    done = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "asyncapi", "shopapp", "-o", "asyncapi.json",
         "--typescript", "client.ts"],
        cwd=directory, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (directory / "usage.ts").write_text(USAGE)


def test_the_client_compiles_and_a_removed_field_breaks_the_build(
    tmp_path: Path, tsc: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    _generate(tmp_path / "v2", AMOUNT)
    built = tsc(tmp_path / "v2", "usage.ts")
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "v2" / "out" / "client.js").exists()

    _generate(tmp_path / "removed", "# amount: removed")
    broken = tsc(tmp_path / "removed", "usage.ts")
    assert broken.returncode != 0
    assert "'amount' does not exist in type 'OrderPlaced'" in broken.stdout
