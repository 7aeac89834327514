"""MkDocs hook: after the build, every internal link of every built page must resolve.

MkDocs checks the links written in Markdown; this checks the HTML it produced, so links
made by the theme, by mkdocstrings' cross-references and by raw HTML are checked too: each
relative ``href``/``src`` must name a file of the built site, and each ``#fragment`` an
``id`` on the target page. A broken one is logged as a warning, which ``mkdocs build
--strict`` (``make docs``) turns into a failed build.
"""

from __future__ import annotations

import logging
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger("mkdocs.hooks.docs_link_check")

SKIPPED_SCHEMES = {"http", "https", "mailto", "data", "javascript"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name == "href" or (name == "src" and tag in ("img", "script")):
                self.links.append(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _target(site: Path, page: Path, link: str) -> tuple[Path, str] | None:
    parts = urlsplit(link)
    if parts.scheme or parts.netloc:
        return None
    if not parts.path:
        return page, unquote(parts.fragment)
    base = site if parts.path.startswith("/") else page.parent
    target = (base / unquote(parts.path).lstrip("/")).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def on_post_build(config: Any, **_: Any) -> None:
    site = Path(config["site_dir"]).resolve()
    pages = {path: _parse(path) for path in site.rglob("*.html")}
    broken = 0
    for page, parsed in pages.items():
        for link in parsed.links:
            if urlsplit(link).scheme in SKIPPED_SCHEMES:
                continue
            found = _target(site, page, link)
            if found is None:
                continue
            target, fragment = found
            name = page.relative_to(site)
            if not target.exists():
                log.warning("%s: broken link %r (no %s)", name, link, target)
                broken += 1
            elif fragment and target in pages and fragment not in pages[target].ids:
                log.warning("%s: link %r names no anchor #%s", name, link, fragment)
                broken += 1
    log.info("checked the internal links of %d pages: %d broken", len(pages), broken)
