"""The package's public surface."""

from __future__ import annotations

import types

import tidings


def test_all_is_a_tuple_of_unique_importable_names() -> None:
    assert isinstance(tidings.__all__, tuple)
    assert len(set(tidings.__all__)) == len(tidings.__all__)
    for name in tidings.__all__:
        assert hasattr(tidings, name), name


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(tidings).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(tidings.__all__) | {"__version__"}


def test_errors_share_one_base() -> None:
    for name in tidings.__all__:
        obj = getattr(tidings, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, tidings.TidingsError), name
