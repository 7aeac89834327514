"""The errors of schema contracts, all under :class:`SchemaError`.

::

    TidingsError
     └── SchemaError
          ├── InvalidSchemaError       (ValueError)   a schema text that is no schema of its kind
          ├── UnmappableTypeError      (TypeError)    a class with no Avro schema
          ├── IncompatibleSchemaError  (ValueError)   a registration breaking the subject's mode
          ├── SchemaNotFoundError      (LookupError)  a subject, version or id not registered
          ├── RegistryUnavailableError (ConnectionError) the registry cannot be reached
          └── SchemaViolationError     (ValueError)   an event that does not satisfy its schema

Each message says what was wrong and what to do; the attributes carry the same facts for
programs (the HTTP API copies them into its problem documents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tidings.exceptions import TidingsError

__all__ = (
    "Break",
    "IncompatibleSchemaError",
    "InvalidSchemaError",
    "RegistryUnavailableError",
    "SchemaError",
    "SchemaNotFoundError",
    "SchemaViolationError",
    "UnmappableTypeError",
)


class SchemaError(TidingsError):
    """Base class of the schema-contract errors."""


class InvalidSchemaError(SchemaError, ValueError):
    """A schema that is not valid JSON Schema (or Avro); the message says why."""


class UnmappableTypeError(SchemaError, TypeError):
    """An event class with no Avro schema (the message names the field and its type)."""


@dataclass(frozen=True)
class Break:
    """One compatibility rule a schema change breaks.

    Attributes:
        rule: what breaks, e.g. ``field-added-without-default``, ``field-removed``,
            ``type-changed``.
        field: the JSON path of the field (``$.amount``).
        detail: one sentence saying what changed.
        version: the registered version it is incompatible with (0: not registered yet).
    """

    rule: str
    field: str
    detail: str
    version: int = 0

    def __str__(self) -> str:
        against = f" (against version {self.version})" if self.version else ""
        return f"{self.field}: {self.rule}: {self.detail}{against}"


class IncompatibleSchemaError(SchemaError, ValueError):
    """A schema refused at registration: :attr:`breaks` lists every rule it breaks."""

    def __init__(self, subject: str, mode: str, breaks: Sequence[Break]) -> None:
        self.subject = subject
        self.mode = mode
        self.breaks = tuple(breaks)
        listed = "; ".join(str(b) for b in self.breaks)
        super().__init__(
            f"the schema is incompatible with subject {subject!r} under {mode}: {listed}; "
            "give the field a default, keep the old field, or register under a new subject"
        )


class SchemaNotFoundError(SchemaError, LookupError):
    """A subject, version or schema id that is not registered.

    Attributes:
        code: the Confluent error code (40401 subject, 40402 version, 40403 schema).
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class RegistryUnavailableError(SchemaError, ConnectionError):
    """The schema registry could not be reached (and no cached schema can stand in)."""


class SchemaViolationError(SchemaError, ValueError):
    """An event that does not satisfy the registered schema of its topic.

    Attributes:
        topic: the event's topic.
        subject: the registry subject its schema is registered under.
        version: the schema version it was checked against.
        field: the JSON path of the offending field (``$.amount``; ``$`` for the whole).
        rule: the JSON Schema keyword it breaks (``type``, ``required``, ``minimum``...).
    """

    tidings_permanent = True  # a transport dead-letters it at once: a retry cannot help

    def __init__(
        self, message: str, *, topic: str, subject: str, version: int, field: str, rule: str
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.subject = subject
        self.version = version
        self.field = field
        self.rule = rule
