"""examples/: every file is shown in docs/examples.md, and every program there runs.

tests/test_docs.py runs the page: each ``examples/*.py`` program as a script of its own
(``<!-- run: script -->``, a NATS server for the one that needs it), ``test_*.py`` under
pytest. This module holds the page to showing every example that way, so a new example
that is not on the page (and so not run) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_file())
PAGE = ROOT / "docs" / "examples.md"


def shown_as(path: Path) -> str | None:
    """The run directive of the block that includes ``path`` on the page, if any."""
    include = re.escape(f'--8<-- "examples/{path.name}"')
    found = re.search(rf"<!-- (?P<mark>[^\n]*?) -->\n```python\n{include}\n```", PAGE.read_text())
    return None if found is None else found["mark"]


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.suffix == ".py"], ids=lambda p: p.name)
def test_every_example_program_is_run_from_the_examples_page(path: Path) -> None:
    mark = shown_as(path)
    assert mark is not None, f"docs/examples.md does not show {path.name} in a ```python block"
    expected = "run: pytest" if path.name.startswith("test_") else "run: script"
    assert expected in mark.split("; "), f"{path.name} is shown with <!-- {mark} -->"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_linked_from_the_examples_page(path: Path) -> None:
    assert f"`{path.name}`" in PAGE.read_text()
