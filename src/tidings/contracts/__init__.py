"""Schema contracts: schemas from event classes, a registry with compatibility rules, and
validation at the boundaries (see ``docs/contracts.md``).

Needs the ``contracts`` extra (``jsonschema``, ``fastavro``): ``pip install
'tidings[contracts]'``.
"""

from __future__ import annotations

from tidings.contracts.compatibility import MODES, breaks_for_mode, reader_breaks
from tidings.contracts.errors import (
    Break,
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaError,
    SchemaNotFoundError,
    SchemaViolationError,
    UnmappableTypeError,
)
from tidings.contracts.registry import RegisteredSchema, SchemaRegistry, SchemaSource
from tidings.contracts.schemas import (
    avro_schema,
    json_schema,
    parse_schema_uri,
    schema_uri,
    subject_for,
)
from tidings.contracts.validation import Validator, compile_schema

__all__ = (
    "MODES",
    "Break",
    "IncompatibleSchemaError",
    "InvalidSchemaError",
    "RegisteredSchema",
    "RegistryUnavailableError",
    "SchemaError",
    "SchemaNotFoundError",
    "SchemaRegistry",
    "SchemaSource",
    "SchemaViolationError",
    "UnmappableTypeError",
    "Validator",
    "avro_schema",
    "breaks_for_mode",
    "compile_schema",
    "json_schema",
    "parse_schema_uri",
    "reader_breaks",
    "schema_uri",
    "subject_for",
)
