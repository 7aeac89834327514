"""Split percentages are sticky across processes: the variant of a key is a stable hash of
the route and the key, the same in processes whose ``hash()`` differs (``PYTHONHASHSEED``).
A split drawn with Python's ``hash()`` of a str would disagree between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tidings.event import Envelope
from tidings.gateway import choose_variant, parse_config

CONFIG = """\
routes:
  - name: scoring
    from: tx
    split:
      by: key
      variants:
        - {name: a, percent: 50, to: [{topic: s.a}]}
        - {name: b, percent: 30, to: [{topic: s.b}]}
        - {name: c, percent: 20, to: [{topic: s.c}]}
"""
KEYS = 300

SCRIPT = f"""
import json
from tidings.event import Envelope
from tidings.gateway import choose_variant, parse_config
[route] = parse_config([("t.yaml", {CONFIG!r})]).routes
assert route.split is not None
names = []
for n in range({KEYS}):
    env = Envelope("tx", {{}}, 1, key=f"customer-{{n}}", source="s", headers={{}}, _id="x")
    chosen = choose_variant(route.name, route.split, env)
    assert chosen is not None
    names.append(chosen[0])
print(json.dumps(names))
"""


def variants_in_a_process(seed: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": seed},
    )
    names: list[str] = json.loads(done.stdout)
    return names


def test_each_key_gets_the_same_variant_in_every_process() -> None:
    [route] = parse_config([("t.yaml", CONFIG)]).routes
    assert route.split is not None
    here = []
    for n in range(KEYS):
        env: Envelope[Any] = Envelope(
            "tx", {}, 1, key=f"customer-{n}", source="s", headers={}, _id="x"
        )
        chosen = choose_variant(route.name, route.split, env)
        assert chosen is not None
        here.append(chosen[0])
    one, two = variants_in_a_process("1"), variants_in_a_process("2")
    assert one == two == here
    assert set(here) == {"a", "b", "c"}  # every variant drawn, so the comparison means something
