"""The schema registry: subjects, versions, ids and compatibility modes, kept in the log.

Every registration is an event appended to the event store under the topic
``tidings.schemas.registered`` (mode changes: ``tidings.schemas.compatibility``), so the
registry is as durable as the log and shared by every process that uses the same store
(one SQLite file on a machine, one PostgreSQL database in a cluster). Each process keeps
the registrations it has read in memory and reads the new ones before answering
(:meth:`SchemaRegistry.sync`).

Guarantees:

- **Versions are consistent across processes.** A registration appends to the subject's
  stream (``tidings.schemas/<subject>``) expecting the version count it checked against;
  a concurrent registration elsewhere makes the append fail, and the registration is
  checked again against what won (optimistic concurrency). Versions are 1, 2, 3...
- **Ids are global and stable.** A schema's id is the log position of its first
  registration; registering the same schema (same canonical text and type) again, under
  any subject, gives the same id, as Confluent's registry does.
- **Checked before stored.** A schema that is not valid JSON Schema or Avro, or that
  breaks the subject's compatibility mode (:mod:`tidings.contracts.compatibility`), is
  refused with every rule it breaks and nothing is appended.
- **Unreachable store.** At start (the first :meth:`sync`) an unreachable store raises
  :class:`~tidings.contracts.errors.RegistryUnavailableError`; later, reads keep answering
  from what was read (:attr:`stale_since` says since when, and a warning is logged once).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import msgspec

from tidings.contracts.compatibility import MODES, breaks_for_mode
from tidings.contracts.errors import (
    Break,
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaNotFoundError,
)
from tidings.event import NO_HEADERS, Envelope, event
from tidings.exceptions import ConcurrencyError, StoreError

__all__ = (
    "REGISTERED_TOPIC",
    "SCHEMA_TYPES",
    "CompatibilitySet",
    "RegisteredSchema",
    "SchemaRegistered",
    "SchemaRegistry",
    "SchemaSource",
    "canonical",
    "pick",
)

logger = logging.getLogger("tidings.contracts")

REGISTERED_TOPIC: Final = "tidings.schemas.registered"
SCHEMA_TYPES: Final = ("JSON", "AVRO")
_STREAM_PREFIX: Final = "tidings.schemas/"
_ATTEMPTS: Final = 16


@event(REGISTERED_TOPIC)
class SchemaRegistered(msgspec.Struct, frozen=True):
    """A schema registered under a subject, as stored in the log."""

    subject: str
    version: int
    schema_type: str
    schema: str
    id: int = 0
    """The schema's id; 0: the position of this record (a schema registered first here)."""


@event("tidings.schemas.compatibility")
class CompatibilitySet(msgspec.Struct, frozen=True):
    """A compatibility mode set for a subject (``""``: the registry's default)."""

    subject: str
    mode: str


@dataclass(frozen=True)
class RegisteredSchema:
    """One version of a subject.

    Attributes:
        subject: the subject (``<topic>-value`` for a topic's events).
        version: 1, 2, 3... within the subject.
        id: the global id of the schema text (shared by subjects registering the same).
        schema_type: ``JSON`` or ``AVRO``.
        schema: the canonical schema text (JSON, keys sorted).
    """

    subject: str
    version: int
    id: int
    schema_type: str
    schema: str
    parsed: Any = field(compare=False, repr=False, default=None)


class SchemaSource(Protocol):
    """Where a validator finds registered schemas (the registry, or a client's cache)."""

    def cached(self, subject: str, version: int | None = None) -> RegisteredSchema | None:
        """The version (``None``: the latest) of ``subject`` known here, without I/O."""
        ...


def pick(versions: list[RegisteredSchema] | None, version: int | None) -> RegisteredSchema | None:
    """Version ``version`` (``None``: the latest) of a subject's ``versions`` (1, 2, 3... in
    order), or ``None``."""
    if not versions:
        return None
    if version is None:
        return versions[-1]
    if 1 <= version <= len(versions):
        return versions[version - 1]
    return None


def canonical(schema: str | Mapping[str, Any] | list[Any], schema_type: str) -> tuple[str, Any]:
    """The canonical text of ``schema`` (JSON with sorted keys) and its parsed form.

    Raises:
        InvalidSchemaError: if the text is not JSON, the type unknown, or the schema is not
            valid JSON Schema (checked against its metaschema) or Avro (parsed by fastavro).
    """
    if schema_type not in SCHEMA_TYPES:
        raise InvalidSchemaError(
            f"schemaType {schema_type!r} is not supported; use one of {', '.join(SCHEMA_TYPES)}"
        )
    if isinstance(schema, str):
        try:
            parsed = msgspec.json.decode(schema)
        except msgspec.DecodeError as exc:
            raise InvalidSchemaError(f"the schema is not JSON: {exc}") from None
    else:
        parsed = msgspec.json.decode(msgspec.json.encode(schema))
    if schema_type == "JSON":
        import jsonschema

        if not isinstance(parsed, dict):
            raise InvalidSchemaError("a JSON Schema here is an object ({...})")
        try:
            jsonschema.validators.validator_for(parsed).check_schema(parsed)
        except jsonschema.SchemaError as exc:
            where = "/".join(map(str, exc.path)) or "the root"
            raise InvalidSchemaError(f"invalid JSON Schema at {where}: {exc.message}") from None
    else:
        import fastavro

        try:
            fastavro.parse_schema(parsed)
        except Exception as exc:
            raise InvalidSchemaError(f"invalid Avro schema: {exc}") from None
    return msgspec.json.encode(parsed, order="sorted").decode(), parsed


class SchemaRegistry:
    """Subjects and their schema versions, stored in ``store`` (see the module docstring).

    Args:
        store: the event store holding the registrations.
        default_mode: the compatibility mode of subjects with none set (and no default set).
        max_age: :meth:`refresh` reads the log at most this often (seconds).
    """

    def __init__(self, store: Any, *, default_mode: str = "BACKWARD", max_age: float = 1.0) -> None:
        if default_mode not in MODES:
            raise ValueError(f"compatibility mode {default_mode!r} is none of {', '.join(MODES)}")
        self.store = store
        self.default_mode = default_mode
        self.max_age = max_age
        self._position = 0
        self._synced_at = -1.0
        self._subjects: dict[str, list[RegisteredSchema]] = {}
        self._by_id: dict[int, RegisteredSchema] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._modes: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.stale_since: float | None = None
        """Wall-clock time since which the log could not be read (``None``: it could)."""

    # -- reading the log ------------------------------------------------------------------

    async def sync(self) -> None:
        """Read the registrations appended since the last sync.

        Raises:
            RegistryUnavailableError: if the store cannot be read and nothing was read before.
        """
        try:
            records = await self.store.read(
                after=self._position, topic="tidings.schemas.>", unknown="skip"
            )
        except StoreError as exc:
            if self._synced_at < 0:
                raise RegistryUnavailableError(
                    f"the schema registry cannot read its log ({exc}); check the store URL "
                    "and that the database is up"
                ) from exc
            if self.stale_since is None:
                self.stale_since = time.time()
                logger.warning(
                    "the schema registry cannot read its log (%s); validating with the %d "
                    "schemas read before",
                    exc,
                    len(self._by_id),
                )
            return
        for record in records:
            self._apply(record.position, record.envelope.payload)
            self._position = record.position
        self._synced_at = time.monotonic()
        if self.stale_since is not None:
            logger.info("the schema registry reads its log again")
            self.stale_since = None

    async def refresh(self) -> None:
        """:meth:`sync` unless the last one is younger than ``max_age``."""
        if time.monotonic() - self._synced_at >= self.max_age or self._synced_at < 0:
            await self.sync()

    def _apply(self, position: int, payload: object) -> None:
        if isinstance(payload, SchemaRegistered):
            sid = payload.id or position
            parsed = msgspec.json.decode(payload.schema)
            entry = RegisteredSchema(
                payload.subject, payload.version, sid, payload.schema_type, payload.schema, parsed
            )
            versions = self._subjects.setdefault(payload.subject, [])
            if len(versions) == payload.version - 1:
                versions.append(entry)
            self._by_id.setdefault(sid, entry)
            self._ids.setdefault((payload.schema_type, payload.schema), sid)
        elif isinstance(payload, CompatibilitySet):
            self._modes[payload.subject] = payload.mode

    # -- the cache, without I/O ---------------------------------------------------------------

    def cached(self, subject: str, version: int | None = None) -> RegisteredSchema | None:
        """The version (``None``: latest) of ``subject`` read so far, or ``None``."""
        return pick(self._subjects.get(subject), version)

    # -- the API --------------------------------------------------------------------------------

    async def subjects(self) -> list[str]:
        """Every subject with at least one version, sorted."""
        await self.sync()
        return sorted(self._subjects)

    async def versions(self, subject: str) -> list[int]:
        """The versions of ``subject``.

        Raises:
            SchemaNotFoundError: (40401) if the subject has none.
        """
        await self.sync()
        return [s.version for s in self._versions(subject)]

    def _versions(self, subject: str) -> list[RegisteredSchema]:
        versions = self._subjects.get(subject)
        if not versions:
            raise SchemaNotFoundError(
                f"subject {subject!r} is not registered; register a schema under it first",
                code=40401,
            )
        return versions

    async def version(self, subject: str, version: int | Literal["latest"]) -> RegisteredSchema:
        """One version of ``subject`` (``"latest"`` or ``-1``: the newest).

        Raises:
            SchemaNotFoundError: (40401) no such subject, (40402) no such version.
        """
        await self.sync()
        versions = self._versions(subject)
        if version in ("latest", -1):
            return versions[-1]
        if isinstance(version, int) and 1 <= version <= len(versions):
            return versions[version - 1]
        raise SchemaNotFoundError(
            f"subject {subject!r} has no version {version!r}; it has versions 1 to {len(versions)}",
            code=40402,
        )

    async def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema with id ``schema_id``.

        Raises:
            SchemaNotFoundError: (40403) if no schema has that id.
        """
        await self.sync()
        found = self._by_id.get(schema_id)
        if found is None:
            raise SchemaNotFoundError(f"no schema has id {schema_id}", code=40403)
        return found

    async def lookup(
        self, subject: str, schema: str | Mapping[str, Any], schema_type: str = "JSON"
    ) -> RegisteredSchema:
        """The version of ``subject`` that holds ``schema``.

        Raises:
            InvalidSchemaError: if ``schema`` is not a valid schema of its type.
            SchemaNotFoundError: (40401) no such subject, (40403) not registered under it.
        """
        text, _ = canonical(schema, schema_type)
        await self.sync()
        for entry in self._versions(subject):
            if entry.schema == text and entry.schema_type == schema_type:
                return entry
        raise SchemaNotFoundError(
            f"this schema is not registered under subject {subject!r}", code=40403
        )

    async def mode(self, subject: str | None = None) -> str:
        """The compatibility mode in force for ``subject`` (``None``: the default)."""
        await self.sync()
        return self._mode(subject)

    def _mode(self, subject: str | None) -> str:
        if subject is not None and subject in self._modes:
            return self._modes[subject]
        return self._modes.get("", self.default_mode)

    async def subject_mode(self, subject: str) -> str | None:
        """The mode set for ``subject`` itself, ``None`` when it follows the default."""
        await self.sync()
        return self._modes.get(subject)

    async def set_mode(self, mode: str, subject: str | None = None) -> str:
        """Set the compatibility mode of ``subject`` (``None``: the default); return it.

        Raises:
            ValueError: for an unknown mode.
        """
        if mode not in MODES:
            raise ValueError(f"compatibility mode {mode!r} is none of {', '.join(MODES)}")
        await self._append(CompatibilitySet(subject or "", mode), "tidings.schemas.config", None)
        await self.sync()
        return mode

    async def check(
        self,
        subject: str,
        schema: str | Mapping[str, Any],
        schema_type: str = "JSON",
        version: int | Literal["latest"] | None = None,
    ) -> list[Break]:
        """The rules ``schema`` would break in ``subject`` (empty: compatible).

        ``version`` checks against that one version only (as ``BACKWARD``-style modes do
        against the latest); ``None`` checks as a registration would, under the subject's
        mode, transitive modes against every version.

        Raises:
            InvalidSchemaError: if ``schema`` is not a valid schema of its type.
            SchemaNotFoundError: for a named version that does not exist.
        """
        _, parsed = canonical(schema, schema_type)
        await self.sync()
        mode = self._mode(subject)
        if version is not None:
            entry = await self.version(subject, version)
            earlier = [(entry.version, entry.parsed)]
            mode = mode.removesuffix("_TRANSITIVE")
        else:
            earlier = [
                (e.version, e.parsed)
                for e in self._subjects.get(subject, ())
                if e.schema_type == schema_type
            ]
        return breaks_for_mode(mode, parsed, earlier, schema_type)

    async def register(
        self, subject: str, schema: str | Mapping[str, Any], schema_type: str = "JSON"
    ) -> RegisteredSchema:
        """Register ``schema`` under ``subject``; return its version (an existing one if the
        subject already holds it).

        Raises:
            InvalidSchemaError: if ``schema`` is not a valid schema of its type.
            IncompatibleSchemaError: listing every rule it breaks under the subject's mode.
            ValueError: for an empty subject.
        """
        if not subject:
            raise ValueError("a subject is a non-empty str")
        text, parsed = canonical(schema, schema_type)
        async with self._lock:
            for _ in range(_ATTEMPTS):
                await self.sync()
                versions = self._subjects.get(subject, [])
                for entry in versions:
                    if entry.schema == text and entry.schema_type == schema_type:
                        return entry
                mode = self._mode(subject)
                earlier = [(e.version, e.parsed) for e in versions]
                if any(e.schema_type != schema_type for e in versions) and mode != "NONE":
                    raise IncompatibleSchemaError(
                        subject,
                        mode,
                        [
                            Break(
                                "schema-type-changed",
                                "$",
                                f"the subject holds "
                                f"{versions[-1].schema_type} schemas, not {schema_type}",
                            )
                        ],
                    )
                breaks = breaks_for_mode(mode, parsed, earlier, schema_type)
                if breaks:
                    raise IncompatibleSchemaError(subject, mode, breaks)
                known = self._ids.get((schema_type, text), 0)
                record = SchemaRegistered(subject, len(versions) + 1, schema_type, text, known)
                try:
                    await self._append(record, _STREAM_PREFIX + subject, len(versions))
                except ConcurrencyError:
                    continue  # another process registered a version first: check again
                await self.sync()
                found = self.cached(subject, record.version)
                if found is not None and found.schema == text:
                    return found
            raise RegistryUnavailableError(
                f"subject {subject!r} changed under {_ATTEMPTS} registrations in a row; retry"
            )

    async def register_event(self, cls: type, schema_type: str = "JSON") -> RegisteredSchema:
        """Register event class ``cls``'s schema (JSON Schema, or Avro) under its topic's
        subject, as the version its class declares (``@tidings.event(..., version=N)``), so
        that the ``dataschema`` its events carry names this schema.

        Raises:
            InvalidSchemaError: if the subject holds a different number of versions than
                ``N - 1`` (register each version of a class in order).
            IncompatibleSchemaError, UnmappableTypeError: as :meth:`register` and
                :func:`~tidings.contracts.schemas.avro_schema`.
        """
        from tidings.contracts.schemas import avro_schema, json_schema
        from tidings.dataschema import subject_for
        from tidings.event import topic_of, version_of

        schema = json_schema(cls) if schema_type == "JSON" else avro_schema(cls)
        text, _ = canonical(schema, schema_type)
        subject = subject_for(topic_of(cls))
        declared = version_of(cls)
        await self.sync()
        versions = self._subjects.get(subject, [])
        if declared <= len(versions) and versions[declared - 1].schema == text:
            return versions[declared - 1]
        if len(versions) != declared - 1:
            raise InvalidSchemaError(
                f"{cls.__qualname__} declares version {declared}, but subject {subject!r} "
                f"holds {len(versions)} versions: its events' dataschema would name another "
                "schema; register the versions of an event class in order, one each"
            )
        return await self.register(subject, schema, schema_type)

    async def _append(self, payload: object, stream: str, expected: int | None) -> None:
        topic = (
            REGISTERED_TOPIC
            if isinstance(payload, SchemaRegistered)
            else ("tidings.schemas.compatibility")
        )
        envelope = Envelope(
            topic, payload, time.time_ns(), None, "tidings.schemas", NO_HEADERS, uuid.uuid4().hex
        )
        try:
            if expected is None:
                await self.store.append([envelope], stream=stream)
            else:
                await self.store.append([envelope], stream=stream, expected_version=expected)
        except ConcurrencyError:
            raise
        except StoreError as exc:
            raise RegistryUnavailableError(
                f"the schema registry cannot write to its log ({exc}); nothing was registered"
            ) from exc
