"""Every ```python block of the documentation runs: each page under docs/ and README.md.

The convention (docs/contributing.md says it for writers):

- A page's blocks run in order, in one namespace (``__name__ == "__main__"``), in a fresh
  subprocess whose working directory is a new temporary directory: files a block writes
  (``.tidings/events.db``, ``gateway.yaml``) are the page's own.
- A block with a top-level ``await`` runs on the page's one event loop, so a bus opened by
  one block serves the next; a block without runs as plain code (it may call
  ``asyncio.run``).
- An HTML comment on the line before a block says how else it runs, in directives
  separated by ``;``: ``needs: nats``: a NATS server is started for the page (a real
  nats-server with JetStream on a free loopback port) and ``nats://127.0.0.1:4222`` in the
  page's blocks is replaced with its URL; ``run: pytest``: the block is a test module of
  its own, run by pytest; ``run: script``: the block is a program of its own, run as
  ``python example.py`` in its own temporary directory (neither is in the page's
  namespace). Any other comment fails: nothing is skipped.
- A line ``--8<-- "examples/NAME.py"`` (the snippets syntax the site renders) is replaced
  with that file, so an example shown in the docs runs as shown.
- Every fence names its language, and none is another name for Python (``py``,
  ``python3``, ``pycon``...): ``python`` blocks run; ``console``, ``text``, ``yaml``,
  ``json``, ``mermaid`` and the rest are shown.

Pages are found by walking docs/, so a new page is covered without editing this file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.testing.nats_server import NatsServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([*DOCS.rglob("*.md"), ROOT / "README.md"])
BLOCK = re.compile(r"(?:<!-- (?P<mark>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```", re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$', re.M)
FENCE = re.compile(r"^ *```(\S*)", re.M)
# Fence languages under which Python would escape the run: none may be used.
HIDING = {"", "py", "py3", "python3", "pycon", "pyi", "ipython", "ipython3", "python-console"}
NATS_URL = "nats://127.0.0.1:4222"
# Ports the pages name, replaced so the test never binds a fixed port.
SUBSTITUTIONS = {"serve_metrics(9464)": "serve_metrics(0)"}

RUNNER = textwrap.dedent(
    """
    import ast, asyncio, inspect, json, sys

    page, blocks = json.load(open(sys.argv[1]))
    namespace = {"__name__": "__main__"}
    loop = asyncio.new_event_loop()
    for number, code in blocks:
        compiled = compile(
            code, f"{page} block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        if compiled.co_flags & inspect.CO_COROUTINE:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(eval(compiled, namespace))
            asyncio.set_event_loop(None)
        else:
            exec(compiled, namespace)
        print(f"block {number} ok", flush=True)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    """
)


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks(page: Path) -> list[tuple[int, str | None, str]]:
    """(number, mark, code) of every ```python block of ``page``, snippets expanded."""

    def expand(match: re.Match[str]) -> str:
        return (ROOT / match["path"]).read_text()

    return [
        (number, match["mark"], SNIPPET.sub(expand, match["code"]))
        for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1)
    ]


def kind(page: Path, number: int, mark: str | None) -> tuple[str, bool]:
    """How a block runs (``code``, ``pytest`` or ``script``) and whether it needs NATS."""
    directives = [] if mark is None else [d.strip() for d in mark.split(";")]
    run_as, nats = "code", False
    for directive in directives:
        if directive == "needs: nats":
            nats = True
        elif directive in ("run: pytest", "run: script"):
            run_as = directive.removeprefix("run: ")
        else:
            raise AssertionError(
                f"{page_id(page)} block {number}: unknown directive {directive!r} in <!-- {mark} -->"
            )
    return run_as, nats


def run(args: list[str], cwd: Path, timeout: float = 180) -> str:
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


def prepared(page: Path, number: int, code: str, nats: bool, url: str | None) -> str:
    if nats:
        assert NATS_URL in code, (
            f"{page_id(page)} block {number} needs nats but names no {NATS_URL}"
        )
    if url is not None:
        code = code.replace(NATS_URL, url)
    for old, new in SUBSTITUTIONS.items():
        code = code.replace(old, new)
    return code


def run_page(page: Path, tmp_path: Path) -> list[int]:
    """Run ``page``'s blocks as the convention says; the numbers of the blocks that ran."""
    found = [(number, *kind(page, number, mark), code) for number, mark, code in blocks(page)]
    ran: list[int] = []
    server = NatsServer() if any(nats for _, _, nats, _ in found) else None
    url = server.__enter__().url if server is not None else None
    try:
        tests = [(n, c) for n, run_as, _, c in found if run_as == "pytest"]
        if tests:
            directory = tmp_path / "pytest"
            directory.mkdir()
            for number, code in tests:
                (directory / f"test_block_{number}.py").write_text(code)
            out = run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "."], directory
            )
            assert f"{len(tests)} passed" in out, out
            ran += [number for number, _ in tests]
        for number, run_as, nats, code in found:
            if run_as == "script":
                directory = tmp_path / f"script_{number}"
                directory.mkdir()
                (directory / "example.py").write_text(prepared(page, number, code, nats, url))
                run([sys.executable, "example.py"], directory)
                ran.append(number)
        program = [
            (number, prepared(page, number, code, nats, url))
            for number, run_as, nats, code in found
            if run_as == "code"
        ]
        if program:
            (tmp_path / "blocks.json").write_text(json.dumps([page_id(page), program]))
            (tmp_path / "runner.py").write_text(RUNNER)
            out = run([sys.executable, str(tmp_path / "runner.py"), "blocks.json"], tmp_path)
            done = [
                int(line.split()[1])
                for line in out.splitlines()
                if re.fullmatch(r"block \d+ ok", line)
            ]
            assert done == [number for number, _ in program], out
            ran += done
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    return sorted(ran)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_python_block_of_the_page_runs(page: Path, tmp_path: Path) -> None:
    assert run_page(page, tmp_path) == [number for number, _, _ in blocks(page)]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_python_hides_under_another_fence(page: Path) -> None:
    text = page.read_text()
    opening = FENCE.findall(text)[0::2]
    assert not set(opening) & HIDING, f"{page_id(page)}: fences {set(opening) & HIDING}"
    assert opening.count("python") == len(blocks(page)), "a ```python fence the test misses"
    for path in SNIPPET.findall(text):
        assert (ROOT / path).is_file(), f"{page_id(page)} includes {path}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_tidings_class_the_page_names_is_exported(page: Path) -> None:
    # tidings.Name, capitalised: a class or constant (lower-case tidings.x is also a NATS
    # subject or a header value on some pages; code using functions is run above)
    names = set(re.findall(r"(?<![\"'\w.])tidings\.([A-Z]\w*)\b", page.read_text()))
    missing = sorted(n for n in names if n not in tidings.__all__)
    assert not missing, f"{page_id(page)} names tidings.{missing}, which tidings does not export"


def test_the_docs_are_found_and_the_site_lists_the_sections() -> None:
    assert DOCS / "architecture.md" in PAGES
    nav = (ROOT / "mkdocs.yml").read_text()
    for section in ("Tutorials", "How-to guides", "Reference", "Explanations"):
        assert f"  - {section}:" in nav


def test_the_cli_reference_lists_every_command_and_option() -> None:
    import typer

    from tidings.cli import app

    page = (DOCS / "reference" / "cli.md").read_text()
    missing = []

    def walk(command: Any, path: str) -> None:  # a click command (typer's own click)
        named = f"tidings {path}" in page or f"| `{path.rsplit(' ', 1)[-1]}`" in page
        if path and not named:
            missing.append(path)
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help" and f"`{opt}" not in page:
                    missing.append(f"{path} {opt}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    assert not missing, f"docs/reference/cli.md does not mention {missing}"


def test_the_errors_reference_names_every_exported_error() -> None:
    page = (DOCS / "reference" / "errors.md").read_text()
    errors = [
        name
        for name in tidings.__all__
        if isinstance(getattr(tidings, name), type)
        and issubclass(getattr(tidings, name), Exception)
    ]
    assert len(errors) > 20
    missing = [name for name in errors if not re.search(rf"`(tidings\.)?{name}`", page)]
    assert not missing, f"docs/reference/errors.md does not name {missing}"
