"""The configuration reference (docs/reference/gateway-config.md) lists every key the
validator takes, by its path, with a default.

The keys are read from the validator itself, through its public behaviour: a mapping with
an unknown key is refused with a message listing the known keys of that place. So a key
added to the validator and not to the reference fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tidings.gateway import ConfigError, parse_config

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "gateway-config.md"
KNOWN = re.compile(r"unknown key 'zz' in .*?; known keys: (?P<keys>.*)$")
ROUTE = "routes: [{{name: a, from: x, {body}}}]\n"
HOOK = '{webhook: "http://127.0.0.1:9/"'

# (path prefix in the reference, a config with the unknown key 'zz' at that place)
PLACES = [
    ("", "zz: 1\nroutes: []\n"),
    ("http.", "http: {zz: 1}\n"),
    ("http.tokens[].", "http: {tokens: [{name: a, token_env: A, zz: 1}]}\n"),
    ("http.rate_limit.", "http: {rate_limit: {rate: 1, zz: 1}}\n"),
    ("schemas.", "schemas: {zz: 1}\n"),
    ("routes[].", ROUTE.format(body="to: [], zz: 1")),
    (
        "routes[].split.",
        ROUTE.format(body="split: {by: key, variants: [{percent: 100, to: []}], zz: 1}"),
    ),
    (
        "routes[].split.variants[].",
        ROUTE.format(body="split: {by: key, variants: [{percent: 100, to: [], zz: 1}]}"),
    ),
    ("routes[].to[].", ROUTE.format(body="to: [{topic: y, zz: 1}]")),
    (
        "routes[].to[].",
        "transport: nats://127.0.0.1:4222\n" + ROUTE.format(body="to: [{nats: y, zz: 1}]"),
    ),
    ("routes[].to[].", ROUTE.format(body=f"to: [{HOOK}, zz: 1}}]")),
    ("routes[].to[].retry.", ROUTE.format(body=f"to: [{HOOK}, retry: {{zz: 1}}}}]")),
    ("routes[].to[].", ROUTE.format(body='to: [{mqtt: a/b, url: "mqtt://127.0.0.1:1", zz: 1}]')),
    ("routes[].to[].", ROUTE.format(body='to: [{amqp: ex, url: "amqp://127.0.0.1:1/", zz: 1}]')),
    ("sources[].", "sources: [{mqtt: 'mqtt://127.0.0.1:1', subscribe: [a/#], zz: 1}]\n"),
    ("sources[].", "sources: [{amqp: 'amqp://127.0.0.1:1/', queues: [q], zz: 1}]\n"),
]


def known_keys(text: str) -> list[str]:
    """The keys the validator lists as known where ``text`` puts the key ``zz``."""
    with pytest.raises(ConfigError) as refused:
        parse_config([("c.yaml", text)])
    found = [KNOWN.search(p.message) for p in refused.value.problems]
    [keys] = [m["keys"] for m in found if m is not None]
    return keys.split(", ")


def reference_rows() -> dict[str, str]:
    """The first two cells (key, default) of every table row of the reference."""
    rows = {}
    for line in REFERENCE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[1]
    return rows


@pytest.mark.parametrize(("prefix", "text"), PLACES)
def test_every_key_the_validator_takes_has_a_row_with_a_default(prefix: str, text: str) -> None:
    keys = known_keys(text)
    assert len(keys) >= 1
    rows = reference_rows()
    missing = [f"{prefix}{key}" for key in keys if f"{prefix}{key}" not in rows]
    assert missing == [], f"not in {REFERENCE.name}: {missing}"
    assert all(rows[f"{prefix}{key}"] for key in keys)  # a default (or 'required') is given


def test_the_reference_lists_no_key_the_validator_refuses() -> None:
    taken = {f"{prefix}{key}" for prefix, text in PLACES for key in known_keys(text)}
    assert set(reference_rows()) - taken == set()
