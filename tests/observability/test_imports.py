"""``import tidings`` stays free of the optional observability backends."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["tidings", "tidings.observability"])
def test_importing_loads_neither_opentelemetry_nor_prometheus(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'prometheus_client')]; "
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_the_lazy_names_load_their_module() -> None:
    import tidings.observability as observability

    assert observability.Tracing.__module__ == "tidings.observability.tracing"
    assert observability.Metrics.__module__ == "tidings.observability.metrics"
    assert set(observability.__all__) <= set(dir(observability)) | set(observability._LAZY)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = observability.nope
