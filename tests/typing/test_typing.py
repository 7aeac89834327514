"""The typed API: correct usage type-checks, wrong usage fails where marked.

Each line of ``cases/bad_usage.py`` that must fail ends in ``# E: <error-code>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

CASES = Path(__file__).parent / "cases"
ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.slow


def _mypy(path: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        ["--strict", "--no-incremental", "--config-file", str(ROOT / "pyproject.toml"), str(path)]
    )
    return stdout + stderr, status


def test_correct_usage_type_checks() -> None:
    output, status = _mypy(CASES / "ok_usage.py")
    assert status == 0, output


def test_wrong_usage_fails_exactly_where_marked() -> None:
    path = CASES / "bad_usage.py"
    expected = {
        number: code
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if (match := re.search(r"# E: ([a-z-]+)$", line)) and (code := match.group(1))
    }
    output, status = _mypy(path)
    assert status == 1, output
    found: dict[int, set[str]] = {}
    for number, code in re.findall(r"bad_usage\.py:(\d+): error: .*\[([a-z-]+)\]$", output, re.M):
        found.setdefault(int(number), set()).add(code)
    assert set(found) == set(expected), output
    for number, code in expected.items():
        assert code in found[number], (number, output)
