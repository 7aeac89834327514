"""README.md: the front page. Its example runs as written, it links into the docs, and it
names only what exists.

The README is short on purpose (what, why, the two commands, a 20-line example, links);
the manual is the documentation site under docs/. Every ```python block of the README is
also run by tests/test_docs.py, under the same convention as the docs pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tidings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"```python\n(?P<code>.*?)^```", re.S | re.M)


def _examples() -> list[str]:
    return [match["code"] for match in BLOCK.finditer(README.read_text())]


def test_the_readme_is_a_front_page_with_one_short_example() -> None:
    text = README.read_text()
    [example] = _examples()
    assert len([line for line in example.splitlines() if line.strip()]) <= 20
    assert "## The two commands" in text
    for command in ("make run", "make test"):
        assert f"`{command}`" in text
    assert len(text.splitlines()) < 120, "the manual belongs in docs/, not in the README"
    # Shell sessions are shown, not run; any other language would escape tests/test_docs.py.
    fences = re.findall(r"^```(\w*)$", text, re.M)
    assert set(fences[0::2]) <= {"python", "console"}


def test_the_example_runs_as_written(tmp_path: Path) -> None:
    [example] = _examples()
    (tmp_path / "example.py").write_text(example)
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "big order o1"
    assert done.stdout.count("orders.placed ") == 2  # log_any saw o1 and o2


def test_the_readme_links_into_the_docs_and_only_inside_the_repository() -> None:
    text = README.read_text()
    assert "../" not in text
    targets = re.findall(r"\]\(([^)]+)\)", text)
    for target in targets:
        if re.match(r"https?://", target):
            continue
        assert (ROOT / target.split("#")[0]).exists(), target
    sections = ("tutorials/", "how-to/", "reference/", "explanations/", "architecture.md")
    for section in sections:
        assert any(target.startswith(f"docs/{section}") for target in targets), section


def test_every_tidings_name_in_the_readme_is_exported() -> None:
    # tidings.Name in code and prose (not inside a string: "tidings.publish" is a value)
    names = set(re.findall(r"(?<![\"'\w.])tidings\.([A-Za-z_]\w*)\b", README.read_text()))
    assert {"Bus", "event", "Envelope"} <= names
    missing = sorted(n for n in names if n not in tidings.__all__)
    assert not missing, f"the README names tidings.{missing} but tidings does not export them"
