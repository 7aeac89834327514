"""Run inside a fresh venv: import every public tidings module, print what happened as JSON.

``{"module": null}`` when it imported; ``{"module": "ExcType: message"}`` when it raised
(an ``ImportError`` or, for the ``tidings`` command, ``SystemExit``). Public: no path
segment starts with an underscore.
"""

from __future__ import annotations

import importlib
import json
import pkgutil

import tidings

outcomes: dict[str, str | None] = {}
for module in pkgutil.walk_packages(tidings.__path__, "tidings.", onerror=lambda name: None):
    if any(part.startswith("_") for part in module.name.split(".")):
        continue
    try:
        importlib.import_module(module.name)
    except (ImportError, SystemExit) as exc:
        outcomes[module.name] = f"{type(exc).__name__}: {exc}"
    else:
        outcomes[module.name] = None
print(json.dumps(outcomes))
