"""Griffe extension: the docstrings' reStructuredText inline markup, as Markdown.

The docstrings are read by people in editors and by ``help()`` as well as rendered on the
site, and they use Sphinx's inline roles and double backticks (``:class:`~tidings.Bus```,
````publish````). This rewrites them for the API reference only: a role becomes inline
code naming its target (the last component when written with ``~``), double backticks
become single ones, and a paragraph ending in ``::`` ends in ``:`` (its indented block
stays a code block). The source is not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|exc|data|obj|const):`(?P<target>[^`]+)`")
DOUBLE = re.compile(r"``(?P<code>[^`]+?)``")
LITERAL = re.compile(r"(?<=\S)::$", re.M)


def markdown(text: str) -> str:
    def role(match: re.Match[str]) -> str:
        target = match["target"]
        label, _, explicit = target.partition(" <")
        if explicit:  # :class:`the bus <tidings.Bus>`
            return f"`{label}`"
        if target.startswith("~"):
            target = target[1:].rsplit(".", 1)[-1]
        return f"`{target}`"

    return LITERAL.sub(":", DOUBLE.sub(r"`\g<code>`", ROLE.sub(role, text)))


class RstRoles(griffe.Extension):
    def on_instance(self, **kwargs: Any) -> None:
        docstring = kwargs["obj"].docstring
        if docstring is not None:
            docstring.value = markdown(docstring.value)
