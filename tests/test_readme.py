"""README.md: every Python code block runs, none skipped; it names only what exists.

Blocks are read in order. An HTML comment on the line before a block says how it runs:

- none, first block: a script, run as written (``python example.py``);
- none, later blocks: fragments continuing the first one, run in its namespace in order,
  with top-level ``await`` allowed (as ``python -m asyncio`` does);
- ``<!-- needs: nats ... -->``: a fragment that needs a NATS server: run with the others,
  against a real nats-server from :class:`~tidings.testing.nats_server.NatsServer`, its URL in
  place of ``nats://127.0.0.1:4222``;
- ``<!-- run: pytest -->``: a test file of its own, run by pytest.

Each kind runs in a subprocess, in a temporary directory, so the README's event classes,
files and ports stay out of this process. Any other comment fails the test: no block is
skipped silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tidings
from tidings.testing.nats_server import NatsServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- (?P<mark>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```", re.S | re.M)
NATS_URL = "nats://127.0.0.1:4222"
# Ports the README names, replaced so the test never binds a fixed port.
SUBSTITUTIONS = {"serve_metrics(9464)": "serve_metrics(0)"}

RUNNER = textwrap.dedent(
    """
    import ast, asyncio, inspect, json, sys

    script, fragments = json.load(open(sys.argv[1]))
    namespace = {"__name__": "__main__"}
    exec(compile(script, "README.md block 1", "exec"), namespace)

    async def run_fragments():
        for number, code in fragments:
            compiled = compile(
                code, f"README.md block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            result = eval(compiled, namespace)
            if inspect.iscoroutine(result):
                await result
            print(f"block {number} ok", flush=True)

    asyncio.run(run_fragments())
    """
)


def _blocks() -> list[tuple[int, str | None, str]]:
    """(number, mark, code) of every ```python block, in order."""
    return [
        (number, match["mark"], match["code"])
        for number, match in enumerate(BLOCK.finditer(README.read_text()), start=1)
    ]


def _kind(number: int, mark: str | None) -> str:
    if mark is None:
        return "script" if number == 1 else "fragment"
    if mark.startswith("needs: nats"):
        return "nats"
    if mark == "run: pytest":
        return "pytest"
    raise AssertionError(f"README block {number}: unknown mark <!-- {mark} -->")


def _run(args: list[str], cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_block_has_a_known_kind_and_the_readme_has_them_all() -> None:
    kinds = [_kind(number, mark) for number, mark, _ in _blocks()]
    assert kinds[0] == "script"
    assert {"fragment", "nats", "pytest"} <= set(kinds)
    # Every fenced block that looks like Python is marked ```python, so none escapes.
    fences = re.findall(r"^```(\w*)$", README.read_text(), re.M)
    opening = fences[0::2]
    assert opening.count("python") == len(kinds)
    # Shell sessions and config files are shown, not run; any other language would escape.
    assert set(opening) <= {"python", "", "console", "yaml"}


def test_the_first_example_runs_as_written(tmp_path: Path) -> None:
    [(_, _, script), *_] = _blocks()
    (tmp_path / "example.py").write_text(script)
    out = _run([sys.executable, "example.py"], tmp_path)
    assert "big order o1" in out
    assert "orders.placed" in out


def test_every_fragment_runs_in_order_after_the_first_example(tmp_path: Path) -> None:
    import json

    blocks = _blocks()
    fragments = []
    with NatsServer() as server:
        for number, mark, code in blocks[1:]:
            kind = _kind(number, mark)
            if kind == "pytest":
                continue
            if kind == "nats":
                assert NATS_URL in code, f"block {number} needs nats but names no {NATS_URL}"
                code = code.replace(NATS_URL, server.url)
            for old, new in SUBSTITUTIONS.items():
                code = code.replace(old, new)
            fragments.append((number, code))
        (tmp_path / "blocks.json").write_text(json.dumps([blocks[0][2], fragments]))
        (tmp_path / "runner.py").write_text(RUNNER)
        out = _run([sys.executable, "runner.py", "blocks.json"], tmp_path)
    assert [line for line in out.splitlines() if line.endswith(" ok")] == [
        f"block {number} ok" for number, _ in fragments
    ]


def test_the_testing_example_passes_under_pytest(tmp_path: Path) -> None:
    tests = [code for number, mark, code in _blocks() if _kind(number, mark) == "pytest"]
    assert tests
    for index, code in enumerate(tests):
        (tmp_path / f"test_readme_example_{index}.py").write_text(code)
    out = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        tmp_path,
    )
    assert f"{len(tests)} passed" in out


def test_the_readme_links_only_inside_the_repository() -> None:
    text = README.read_text()
    assert "../" not in text
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if re.match(r"https?://", target):
            continue
        assert (ROOT / target.split("#")[0]).exists(), target


@pytest.mark.parametrize("name", ["SQLiteStore", "PostgresStore", "MemoryStore"])
def test_the_stores_the_readme_lists_are_exported(name: str) -> None:
    assert f"`{name}`" in README.read_text()
    assert name in tidings.__all__
    assert isinstance(getattr(tidings, name), type)


def test_every_tidings_name_in_the_readme_is_exported() -> None:
    # tidings.Name in code and prose (not inside a string: "tidings.publish" is a value)
    names = set(re.findall(r"(?<![\"'\w.])tidings\.([A-Za-z_]\w*)\b", README.read_text()))
    modules = {"testing", "middleware", "observability", "store", "transports", "topics"}
    modules |= {"clock", "dead_letter", "cloudevents", "gateway", "server"}
    missing = sorted(n for n in names - modules if n not in tidings.__all__)
    assert not missing, f"the README names tidings.{missing} but tidings does not export them"
    for name in names - modules:
        getattr(tidings, name)
