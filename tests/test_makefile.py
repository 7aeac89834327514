"""The Makefile's two commands run what the README and the tests say they run.

``make run`` itself creates a venv and serves until Ctrl-C; the service it starts is tested
end to end in tests/server/test_serve.py. Here: that ``make run`` starts exactly that
service (``make -n`` prints the recipe without running it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def recipe(target: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        ["make", "-n", "-B", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_make_run_serves_the_example_config_with_its_demo_token() -> None:
    [serve] = [line for line in recipe("run") if " serve " in line]
    assert serve.endswith(".venv/bin/tidings serve examples/gateway.yaml")
    assert "SHOP_TOKEN=${SHOP_TOKEN:-demo-shop-token}" in serve
    example = (ROOT / "examples" / "gateway.yaml").read_text()
    assert "token_env: SHOP_TOKEN" in example


def test_make_typecheck_checks_the_build_hook_with_the_package() -> None:
    # hatch_build.py compiles the hot path at install: strict mypy covers it (pyproject's
    # [tool.mypy] is strict), against hatchling's and setuptools' types (the dev extra).
    [mypy] = [line for line in recipe("typecheck") if "/mypy src " in line]
    assert mypy.split()[1:] == ["src", "tests", "hatch_build.py"]
