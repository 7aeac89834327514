"""Schema evolution: upcasters that bring old stored payloads to the current version.

An event class declares its schema version with ``@tidings.event("orders.placed",
version=2)``; every stored record keeps the type name and the version it was written at.
When a record is read whose version is older than the class's, the store decodes its payload
as plain JSON values and runs the registered upcasters one version step at a time
(1 -> 2 -> 3 ...) before converting the result into the class::

    store.upcasters.register("orders.placed", 1, lambda old: {**old, "currency": "EUR"})

    @store.upcasters.upcaster(OrderPlaced, 2)
    def _v2_to_v3(old: dict[str, Any]) -> dict[str, Any]: ...

An upcaster receives the payload as plain JSON values (usually a ``dict``) written at
``from_version`` and returns it as it would have been written at ``from_version + 1``. It
must not mutate its argument in a way it relies on afterwards, and should be a pure function.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tidings.event import topic_of
from tidings.exceptions import DecodeError

__all__ = ("Upcaster", "Upcasters")

Upcaster = Callable[[Any], Any]
"""Rewrites a payload (plain JSON values) from one schema version to the next."""

F = TypeVar("F", bound=Upcaster)


class Upcasters:
    """A registry of upcasters per (event type name, version). Safe to share between threads."""

    __slots__ = ("_by_key", "_lock")

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], Upcaster] = {}
        self._lock = threading.Lock()

    def register(self, event_type: str | type, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` to rewrite ``event_type`` payloads from ``from_version`` to the next.

        ``event_type`` is a type name (the event's topic) or an event class.

        Raises:
            ValueError: if ``from_version`` is not a positive int, or an upcaster is already
                registered for that type and version.
        """
        name = event_type if isinstance(event_type, str) else topic_of(event_type)
        if not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 1:
            raise ValueError(f"from_version is a positive int, not {from_version!r}")
        with self._lock:
            if (name, from_version) in self._by_key:
                raise ValueError(
                    f"an upcaster for {name!r} from version {from_version} is already registered"
                )
            self._by_key[(name, from_version)] = fn

    def upcaster(self, event_type: str | type, from_version: int) -> Callable[[F], F]:
        """Decorator form of :meth:`register`; returns the function unchanged."""

        def decorate(fn: F) -> F:
            self.register(event_type, from_version, fn)
            return fn

        return decorate

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def upcast(self, type_name: str, payload: Any, from_version: int, to_version: int) -> Any:
        """Run the upcasters of ``type_name`` from ``from_version`` up to ``to_version``.

        Raises:
            DecodeError: if a step has no upcaster, or the stored version is newer than
                ``to_version``; an exception raised by an upcaster propagates unchanged.
        """
        if from_version > to_version:
            raise DecodeError(
                f"a {type_name!r} payload was written at version {from_version}, newer than "
                f"the version {to_version} its class declares here; upgrade this program",
                type_name=type_name,
            )
        version = from_version
        while version < to_version:
            fn = self._by_key.get((type_name, version))
            if fn is None:
                raise DecodeError(
                    f"no upcaster brings {type_name!r} payloads from version {version} to "
                    f"{version + 1} (the class declares version {to_version}); register one with "
                    f"store.upcasters.register({type_name!r}, {version}, fn)",
                    type_name=type_name,
                )
            payload = fn(payload)
            version += 1
        return payload
