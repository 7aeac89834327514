"""The public surface of each public subpackage: its ``__all__`` (the package itself is
tests/test_init.py).

For each: ``__all__`` is a tuple of unique names, each of which resolves (lazily imported
names included: the dev extra installs every optional client); every class and function the
package (or a module in it) defines and exposes is in it; and its errors share the one base.
"""

from __future__ import annotations

import importlib
import types

import pytest

import tidings

PACKAGES = (
    "tidings.bridges",
    "tidings.bridges.names",
    "tidings.chaos",
    "tidings.contracts",
    "tidings.gateway",
    "tidings.middleware",
    "tidings.observability",
    "tidings.store",
    "tidings.testing",
    "tidings.transports",
)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_a_tuple_of_unique_names_that_resolve(name: str) -> None:
    package = importlib.import_module(name)
    exported = package.__all__
    assert isinstance(exported, tuple), f"{name}.__all__ is a {type(exported).__name__}"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    for attribute in exported:
        assert getattr(package, attribute) is not None, f"{name}.{attribute}"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_tidings_class_and_function_is_exported(name: str) -> None:
    package = importlib.import_module(name)
    public = {
        attribute
        for attribute, value in vars(package).items()
        if not attribute.startswith("_")
        and not isinstance(value, types.ModuleType)
        and isinstance(value, type | types.FunctionType)
        and (value.__module__ == name or value.__module__.startswith(f"{name}."))
    }
    assert public - set(package.__all__) == set(), f"{name} exposes names not in __all__"


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_errors_share_one_base(name: str) -> None:
    package = importlib.import_module(name)
    for attribute in package.__all__:
        value = getattr(package, attribute)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, tidings.TidingsError), f"{name}.{attribute}"
