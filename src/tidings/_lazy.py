"""Names a package exports without importing them until first used: a name whose module
needs an optional extra (``tidings[nats]``, ``tidings[postgres]``...) costs nothing, and
fails with the extra to install only when it is named."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ("lazy_attributes",)


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """The module-level ``__getattr__`` of ``package``: each name of ``modules`` (a name ->
    the module defining it) is imported from its module when first looked up.

    The function it returns raises :class:`AttributeError` for any other name, as a
    module does.
    """

    def attribute(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return attribute
