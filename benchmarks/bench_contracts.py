"""What schema contracts cost: validating an event, and checking a schema's compatibility.

Rows:

- C1 (µs per event, a frozen dataclass event of 10 fields: strings, numbers with bounds,
  an enum, a list, an optional): ``tidings publish`` is ``Bus.publish`` of the event to one
  handler with no validation (the cost validation adds to); ``tidings`` is
  ``Validator.check`` of its envelope against the registered JSON Schema, compiled to
  msgspec (what validation adds per event; two envelopes in turn, since a validator does
  not check again the envelope it found valid last); ``tidings validated publish`` is
  ``Bus(validator=...).publish`` of the event to one handler (the check inside the bus);
  ``jsonschema`` is the reference implementation validating the same event (as plain
  values) against the same schema. Target: ``tidings`` <= 2 µs.
- CC (instructions per event, with valgrind's callgrind when installed and not
  ``--quick``): the three tidings rows of C1 counted in instructions, which the machine's
  load does not change (each variant's calls run inside one ``functools.reduce`` call,
  the only code callgrind collects, as in ``bench_observability``).
- C2 (ms per check): a 100-field schema checked against 50 earlier versions under
  ``FULL_TRANSITIVE`` (both directions, every version), as JSON Schema and as Avro.
  Target: <= 50 ms.

Best of interleaved rounds (the machine may be shared: wall time is noisy).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import msgspec

import tidings
from _harness import Row, check
from tidings.contracts import (
    RegisteredSchema,
    Validator,
    breaks_for_mode,
    json_schema,
)
from tidings.event import Envelope

__all__ = ("run",)

ROUNDS = 5


@tidings.event("bench.contracts.order")
@dataclasses.dataclass(frozen=True)
class Order:
    order_id: str
    customer: str
    amount: Annotated[float, msgspec.Meta(ge=0)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    currency: Literal["EUR", "USD", "GBP"]
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    express: bool
    tags: list[str]
    discount: float
    note: str | None = None


EVENT = Order("o-1", "c-9", 12.5, 3, "EUR", "sku-1", False, ["a", "b"], 0.0, None)


class _Source:
    def __init__(self, schema: dict[str, Any]) -> None:
        text = msgspec.json.encode(schema).decode()
        self.entry = RegisteredSchema("bench.contracts.order-value", 1, 1, "JSON", text, schema)

    def cached(self, subject: str, version: int | None = None) -> RegisteredSchema | None:
        return self.entry


def _best_per_call(fn: Any, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def _variants() -> tuple[dict[str, Any], list[int], tidings.Bus]:
    schema = json_schema(Order)
    validator = Validator(_Source(schema))
    envelopes = itertools.cycle(
        [Envelope("bench.contracts.order", EVENT, 1), Envelope("bench.contracts.order", EVENT, 2)]
    )
    reference = jsonschema.Draft202012Validator(schema)
    plain = msgspec.to_builtins(EVENT)
    calls = [0]

    def handler(event: Order) -> None:
        calls[0] += 1

    def validated_handler(event: Order) -> None:
        calls[1] += 1

    calls.append(0)
    bus = tidings.Bus()
    bus.subscribe(Order, handler)
    validated = tidings.Bus(validator=Validator(_Source(schema)))
    validated.subscribe(Order, validated_handler)
    validate = validator.check
    publish = bus.publish
    validated_publish = validated.publish
    variants = {
        "tidings publish": lambda: publish(EVENT),
        "tidings": lambda: validate(next(envelopes)),
        "tidings validated publish": lambda: validated_publish(EVENT),
        "jsonschema": lambda: reference.validate(plain),
    }
    return variants, calls, bus


def _validation(count: int) -> list[Row]:
    variants, calls, bus = _variants()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(ROUNDS):
        for name, fn in variants.items():
            n = count if name != "jsonschema" else max(1, count // 20)
            best[name] = min(best[name], _best_per_call(fn, n))
    check("C1", "tidings publish", calls[0], count * ROUNDS)
    check("C1", "tidings validated publish", calls[1], count * ROUNDS)
    bus.close()
    notes = {
        "tidings publish": "Bus.publish to 1 handler, no validation (the base cost)",
        "tidings": "added by Validator.check (msgspec-compiled); target <= 2 µs",
        "tidings validated publish": "Bus(validator=...).publish to 1 handler",
        "jsonschema": "the reference implementation, same schema and event",
    }
    return [
        Row("C1", name, "µs per event", value, "µs", notes[name]) for name, value in best.items()
    ]


def _fields(version: int) -> dict[str, Any]:
    kinds = [
        {"type": "string"},
        {"type": "integer", "minimum": 0},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "array", "items": {"type": "string"}},
    ]
    return {f"f{i}": kinds[i % len(kinds)] for i in range(100 - 50 + version)}


def _json_versions() -> list[dict[str, Any]]:
    out = []
    for version in range(1, 52):
        props = _fields(version)
        out.append(
            {"type": "object", "properties": props, "required": [f"f{i}" for i in range(10)]}
        )
    return out


_AVRO = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean"}


def _avro_versions() -> list[dict[str, Any]]:
    out = []
    for version in range(1, 52):
        fields = []
        for i, (name, kind) in enumerate(_fields(version).items()):
            avro: Any = _AVRO.get(kind["type"]) or {"type": "array", "items": "string"}
            field: dict[str, Any] = {"name": name, "type": avro}
            if i >= 10:
                field["default"] = [] if kind["type"] == "array" else _default(avro)
            fields.append(field)
        out.append({"type": "record", "name": "R", "fields": fields})
    return out


def _default(avro: Any) -> Any:
    return {"string": "", "long": 0, "double": 0.0, "boolean": False}.get(avro)


def _compatibility() -> list[Row]:
    rows = []
    for label, versions, kind in (
        ("JSON Schema", _json_versions(), "JSON"),
        ("Avro", _avro_versions(), "AVRO"),
    ):
        new, earlier = versions[-1], list(enumerate(versions[:-1], start=1))
        best = float("inf")
        for _ in range(ROUNDS):
            start = time.perf_counter()
            breaks = breaks_for_mode("FULL_TRANSITIVE", new, earlier, kind)
            best = min(best, time.perf_counter() - start)
            if breaks:
                raise AssertionError(f"C2 {label}: expected compatible, got {breaks[:3]}")
        rows.append(
            Row(
                "C2",
                f"tidings {label}",
                "ms per check",
                best * 1e3,
                "ms",
                "100-field schema vs 50 versions, FULL_TRANSITIVE; target <= 50 ms",
            )
        )
    return rows


CALLGRIND_N = 20_000
CALLGRIND_VARIANTS = ("tidings publish", "tidings", "tidings validated publish")


def _callgrind_target(count: int) -> None:
    """Run in the callgrind process: each variant's calls inside one ``functools.reduce``."""
    variants, _, bus = _variants()
    for name in CALLGRIND_VARIANTS:
        call = variants[name]
        call()  # warm: codecs and compiled checkers built outside the counted call
        functools.reduce(lambda _, __: call(), range(count), None)
    bus.close()


def _callgrind() -> list[Row]:
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--collect-atstart=no",
                "--toggle-collect=functools_reduce", "--dump-after=functools_reduce",
                f"--callgrind-out-file={out}", sys.executable, __file__, "--callgrind",
                str(CALLGRIND_N),
            ],
            capture_output=True, text=True, timeout=900, check=True,
        )  # fmt: skip
        totals = []
        for part in range(1, len(CALLGRIND_VARIANTS) + 1):
            found = re.search(r"^totals: (\d+)", Path(f"{out}.{part}").read_text(), re.MULTILINE)
            if found is None:
                raise RuntimeError(f"callgrind wrote no totals in {out}.{part}")
            totals.append(int(found.group(1)) / CALLGRIND_N)
    publish, validate, validated = totals
    return [
        Row("CC", "tidings publish", "instructions/event", publish, "instr", "no validation"),
        Row(
            "CC",
            "tidings",
            "instructions/event",
            validate,
            "instr",
            f"added by validation: {validate / publish * 100:.0f}% of a publish",
        ),
        Row(
            "CC",
            "tidings validated publish",
            "instructions/event",
            validated,
            "instr",
            f"Bus(validator=...).publish: {validated - publish:,.0f} more than a publish",
        ),
    ]


def run(quick: bool = False) -> list[Row]:
    """C1, CC (valgrind, not ``quick``) and C2 (see the module docstring)."""
    rows = _validation(20_000 if quick else 200_000)
    if not quick and shutil.which("valgrind"):
        rows += _callgrind()
    return rows + _compatibility()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--callgrind"]:
        _callgrind_target(int(sys.argv[2]))
    else:
        for row in run(quick="--quick" in sys.argv):
            print(f"{row.scenario} {row.library:<22} {row.value:>12,.2f} {row.metric}  {row.note}")
