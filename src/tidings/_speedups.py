"""Which build of :mod:`tidings._fastpath` the bus runs: the mypyc-compiled one or pure Python.

An install on a machine with a C compiler also builds ``tidings._fastpath_c``: the same source
compiled by mypyc (``hatch_build.py``), which makes a publish to plain sync handlers about a
fifth cheaper. Without a compiler the install still succeeds and the pure-Python module runs.

Guarantees:

- the compiled module is used only when it was compiled from exactly the ``_fastpath.py``
  beside it (its ``SOURCE_SHA256`` matches): a stale build, after that file changed without
  a reinstall, is logged and left unused;
- setting the environment variable ``TIDINGS_PURE_PYTHON`` to anything but ``""`` or ``"0"``
  before tidings is imported forces the pure-Python module;
- :data:`COMPILED` (also ``tidings.__speedups__``) tells which one runs.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from types import ModuleType
from typing import Final

from tidings import _fastpath

__all__ = ("COMPILED", "PURE_PYTHON_ENV", "DispatchState", "ObservedPublisher", "Publisher")

PURE_PYTHON_ENV: Final = "TIDINGS_PURE_PYTHON"
"""The environment variable that, set (not ``"0"``), forces the pure-Python fast path."""

COMPILED_MODULE: Final = "tidings._fastpath_c"
"""The name of the mypyc-compiled build of :mod:`tidings._fastpath`."""


def source_digest() -> str:
    """The SHA-256 (hex) of ``_fastpath.py`` as it is now: what a current build records."""
    with open(_fastpath.__file__, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def _load() -> ModuleType:
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return _fastpath
    try:
        compiled = importlib.import_module(COMPILED_MODULE)
    except ImportError:  # no compiler at install time (or a platform mypyc does not build)
        return _fastpath
    try:
        current = source_digest()
    except OSError:  # installed without its source: the build is the source
        return compiled
    if getattr(compiled, "SOURCE_SHA256", None) != current:
        logging.getLogger("tidings").warning(
            "%s was built from another version of %s; using the pure-Python module "
            "(reinstall tidings to rebuild it)",
            COMPILED_MODULE,
            _fastpath.__file__,
        )
        return _fastpath
    return compiled


_module: Final = _load()

COMPILED: Final = _module is not _fastpath
"""Whether the bus runs the mypyc-compiled fast path."""

DispatchState: Final[type[_fastpath.DispatchState]] = _module.DispatchState
Publisher: Final[type[_fastpath.Publisher]] = _module.Publisher
ObservedPublisher: Final[type[_fastpath.ObservedPublisher]] = _module.ObservedPublisher
