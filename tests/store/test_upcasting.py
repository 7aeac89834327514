"""Upcasters: registration rules and version arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.exceptions import ConcurrencyError, DecodeError
from tidings.store import ANY, NO_STREAM, Upcasters
from tidings.testing.store_conformance import Placed


def test_upcasters_run_one_step_at_a_time() -> None:
    upcasters = Upcasters()
    upcasters.register("t", 1, lambda old: {**old, "b": 2})

    @upcasters.upcaster("t", 2)
    def add_c(old: dict[str, Any]) -> dict[str, Any]:
        return {**old, "c": old["b"] + 1}

    assert add_c({"b": 1}) == {"b": 1, "c": 2}
    assert upcasters.upcast("t", {"a": 1}, 1, 3) == {"a": 1, "b": 2, "c": 3}
    assert upcasters.upcast("t", {"a": 1}, 2, 2) == {"a": 1}
    assert ("t", 1) in upcasters


def test_registration_rules() -> None:
    upcasters = Upcasters()
    upcasters.register(Placed, 1, lambda old: old)
    assert ("suite.conformance.placed", 1) in upcasters
    with pytest.raises(ValueError, match="already registered"):
        upcasters.register("suite.conformance.placed", 1, lambda old: old)
    with pytest.raises(ValueError, match="positive int"):
        upcasters.register("t", 0, lambda old: old)


def test_gaps_and_newer_versions_are_decode_errors() -> None:
    upcasters = Upcasters()
    with pytest.raises(DecodeError, match="from version 1 to 2"):
        upcasters.upcast("t", {}, 1, 2)
    with pytest.raises(DecodeError, match="newer than the version 2"):
        upcasters.upcast("t", {}, 3, 2)


def test_symbols_and_error_text() -> None:
    assert repr(ANY) == "ANY"
    assert repr(NO_STREAM) == "NO_STREAM"
    error = ConcurrencyError(stream="cart-1", expected=4, actual=6)
    assert str(error).startswith("stream 'cart-1' is at version 6, but the append expected")
    assert "version 4" in str(error)
