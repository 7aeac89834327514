"""Validating events against the registered schema of their topic and version.

:class:`Validator` checks an event's payload against the JSON Schema registered under its
topic's subject (:func:`~tidings.contracts.schemas.subject_for`), at the version its
``dataschema`` names, else the version its class declares, else the latest. A topic with
no registered schema is not checked.

How: each schema version is compiled once into a msgspec type (structs with
``msgspec.Meta`` constraints: lengths, bounds, patterns, enums, closed objects), and a
payload is checked by encoding it to JSON (as it travels anyway) and decoding that into
the compiled type: about a microsecond for a ten-field event
(``benchmarks/bench_contracts.py``). A schema using keywords msgspec cannot express
(``allOf``, ``not``, ``uniqueItems``...) is checked by the ``jsonschema`` library instead;
an Avro schema by fastavro's validation of the JSON values (rules ``type`` and
``required``).
A rejected payload is explained by ``jsonschema`` (the reference implementation decides:
what it accepts passes), so the error names the field's JSON path and the keyword broken.

Every violation is counted per topic and boundary (:attr:`Validator.violations`, exported
as ``tidings_schema_violations_total``).
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

import msgspec

from tidings import codec
from tidings.codec import is_pydantic_model
from tidings.contracts.errors import SchemaViolationError
from tidings.contracts.registry import RegisteredSchema, SchemaSource
from tidings.contracts.schemas import parse_schema_uri, resolve_ref, subject_for
from tidings.event import Envelope, event_type_for, version_of

__all__ = ("Validator", "compile_schema")

_ANNOTATIONS = frozenset(
    {
        "$schema", "$id", "$defs", "definitions", "$comment", "title", "description",
        "default", "examples", "deprecated", "readOnly", "writeOnly", "format",
        "contentEncoding", "contentMediaType",
    }
)  # fmt: skip
_NUMERIC = {
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
    "multipleOf": "multiple_of",
}


_encode = msgspec.json.Encoder().encode


class _UnsupportedError(Exception):
    pass


def compile_schema(schema: Any) -> Callable[[bytes], object]:
    """A checker of JSON bytes for ``schema``: returns when they satisfy it, else raises
    (``msgspec.ValidationError``, or ``jsonschema.ValidationError`` for schemas checked by
    the ``jsonschema`` library)."""
    try:
        target = _Compiler(schema).type_of(schema, "Event")
        return msgspec.json.Decoder(target).decode
    except (_UnsupportedError, TypeError, ValueError):
        import jsonschema

        validator = jsonschema.validators.validator_for(schema)(schema)
        decode = msgspec.json.decode

        def check(data: bytes) -> object:
            value = decode(data)
            validator.validate(value)
            return value

        return check


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root if isinstance(root, dict) else {}
        self.count = 0
        self.depth = 0

    def type_of(self, schema: Any, name: str) -> Any:
        if schema is True or schema == {}:
            return Any
        if not isinstance(schema, dict):
            raise _UnsupportedError
        self.depth += 1
        if self.depth > 64:  # recursive schemas: left to jsonschema
            raise _UnsupportedError
        try:
            return self._type_of(schema, name)
        finally:
            self.depth -= 1

    def _type_of(self, schema: dict[str, Any], name: str) -> Any:
        keys = {k for k in schema if k not in _ANNOTATIONS and not k.startswith("x-")}
        if "$ref" in schema:
            if keys - {"$ref"}:
                raise _UnsupportedError
            return self.type_of(resolve_ref(self.root, schema["$ref"]), name)
        variants = schema.get("anyOf") or schema.get("oneOf")
        if variants is not None:
            if keys - {"anyOf", "oneOf"}:
                raise _UnsupportedError
            types = tuple(self.type_of(v, name) for v in variants)
            return Union[types]  # noqa: UP007 - built at run time
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            if keys - {"enum", "const", "type"} or not values:
                raise _UnsupportedError
            if not all(isinstance(v, str) for v in values) and not all(
                isinstance(v, int) and not isinstance(v, bool) for v in values
            ):
                raise _UnsupportedError
            return Literal[tuple(values)]
        kind = schema.get("type")
        if isinstance(kind, list):
            return Union[tuple(self._type_of({**schema, "type": k}, name) for k in kind)]  # noqa: UP007
        if kind == "string":
            self._only(keys, {"type", "minLength", "maxLength", "pattern"})
            if schema.get("format") == "date-time":
                base: Any = _dt.datetime
            else:
                base = str
            meta = {
                k2: schema[k1]
                for k1, k2 in (
                    ("minLength", "min_length"),
                    ("maxLength", "max_length"),
                    ("pattern", "pattern"),
                )
                if k1 in schema
            }
            return Annotated[base, msgspec.Meta(**meta)] if meta else base
        if kind in ("integer", "number"):
            self._only(keys, {"type", *_NUMERIC})
            base = int if kind == "integer" else float
            meta = {_NUMERIC[k]: schema[k] for k in _NUMERIC if k in schema}
            return Annotated[base, msgspec.Meta(**meta)] if meta else base
        if kind == "boolean":
            self._only(keys, {"type"})
            return bool
        if kind == "null":
            self._only(keys, {"type"})
            return None
        if kind == "array":
            self._only(keys, {"type", "items", "minItems", "maxItems"})
            item = self.type_of(schema.get("items", True), name)
            meta = {
                k2: schema[k1]
                for k1, k2 in (("minItems", "min_length"), ("maxItems", "max_length"))
                if k1 in schema
            }
            return Annotated[list[item], msgspec.Meta(**meta)] if meta else list[item]  # type: ignore[valid-type]
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, keys, name)
        if kind is None and not keys:
            return Any
        raise _UnsupportedError

    @staticmethod
    def _only(keys: set[str], allowed: set[str]) -> None:
        if keys - allowed:
            raise _UnsupportedError

    def _object(self, schema: dict[str, Any], keys: set[str], name: str) -> Any:
        self._only(keys, {"type", "properties", "required", "additionalProperties"})
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if not properties:
            return dict[str, self.type_of(extra, name)] if extra is not False else dict[str, Any]  # type: ignore[misc]
        if extra not in (True, False, {}):
            raise _UnsupportedError
        required = set(schema.get("required", ()))
        if required - set(properties):
            raise _UnsupportedError
        fields: list[Any] = []
        rename: dict[str, str] = {}
        for index, (prop, sub) in enumerate(properties.items()):
            attr = f"f{index}"
            rename[attr] = prop
            typ = self.type_of(sub, prop)
            if prop in required:
                fields.append((attr, typ))
            else:
                fields.append((attr, typ | msgspec.UnsetType, msgspec.UNSET))
        self.count += 1
        return msgspec.defstruct(
            f"{name}_{self.count}",
            fields,
            kw_only=True,
            rename=rename,
            forbid_unknown_fields=extra is False,
            gc=False,  # checked and dropped: never part of a cycle
        )


class _AvroViolationError(Exception):
    def __init__(self, message: str, field: str, rule: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


def _avro_checker(schema: Any) -> Callable[[bytes], object]:
    """A checker of JSON bytes for an Avro schema (fastavro's validation of the decoded
    values): raises :class:`_AvroViolationError` naming the field."""
    import fastavro
    from fastavro.validation import ValidationError, validate

    parsed = fastavro.parse_schema(schema)
    decode = msgspec.json.decode

    def check(data: bytes) -> object:
        value = decode(data)
        try:
            validate(value, parsed, raise_errors=True)
        except ValidationError as exc:
            first = exc.errors[0] if exc.errors else None
            named = getattr(first, "field", None) or ""
            field = "$." + named.split(".", 1)[1] if "." in named else "$"
            datum = getattr(first, "datum", None)
            rule = "required" if datum is None else "type"
            raise _AvroViolationError(
                f"{datum!r} is not {getattr(first, 'schema', 'valid')} (Avro field {named})",
                field,
                rule,
            ) from None
        return value

    return check


def _explain(schema: Any, data: bytes) -> tuple[str, str, str] | None:
    """``(field, rule, message)`` of the first thing ``jsonschema`` finds wrong, or ``None``
    when it finds the data valid."""
    import jsonschema

    value = msgspec.json.decode(data)
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    field = error.json_path
    rule = str(error.validator)
    if rule == "required" and isinstance(error.instance, dict):
        missing = [n for n in error.validator_value if n not in error.instance]
        if missing:
            field = f"{field}.{missing[0]}"
    elif rule == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [n for n in error.instance if n not in allowed]
        if extra:
            field = f"{field}.{extra[0]}"
    return field, rule, error.message


class Validator:
    """Checks events against the schemas of ``source`` (see the module docstring).

    Thread-safe: compiled checkers are built under a lock, counters are updated under it.
    """

    def __init__(self, source: SchemaSource) -> None:
        self.source = source
        self.violations: Counter[tuple[str, str]] = Counter()
        """Violations by ``(topic, boundary)``."""
        self._compiled: dict[str, Callable[[bytes], object]] = {}
        self._targets: dict[tuple[str, type], tuple[str, int | None]] = {}
        self._encoders: dict[type, Callable[[Any], bytes]] = {}
        self._pinned: dict[
            tuple[str, type],
            tuple[RegisteredSchema, Callable[[Any], bytes], Callable[[bytes], object]],
        ] = {}
        self._lock = threading.Lock()
        self._last: Envelope[Any] | None = None  # the envelope last found valid

    def schema_for(self, envelope: Envelope[Any]) -> RegisteredSchema | None:
        """The registered schema ``envelope`` is checked against, or ``None``."""
        topic = envelope.topic
        subject = subject_for(topic)
        version: int | None = None
        named = envelope.attributes.get("dataschema") if envelope.attributes else None
        if named is not None:
            parsed = parse_schema_uri(named)
            if parsed is not None:
                subject, version = parsed
        else:
            cls = type(envelope.payload)
            if event_type_for(topic) is cls:
                version = version_of(cls)
        found = self.source.cached(subject, version)
        if found is None and version is not None and named is None:
            return None  # a class newer than the registry knows: nothing to check against
        if found is None and named is not None and version is not None:
            latest = self.source.cached(subject)
            if latest is not None:  # names a version the registry does not have
                raise self._violation(
                    envelope.topic,
                    "publish",
                    subject,
                    version,
                    "$",
                    "dataschema",
                    f"dataschema {named!r} names version {version} of {subject!r}, which "
                    f"is not registered (the latest is {latest.version})",
                )
        return found

    def check(self, envelope: Envelope[Any], boundary: str = "publish") -> None:
        """Return if ``envelope``'s payload satisfies its registered schema (or none is).

        ``boundary`` labels the count: ``publish``, ``http``, ``transport``...

        The envelope found valid last is not checked again: a bus's ``validator=`` and its
        :class:`~tidings.contracts.transport.ValidatingTransport` sharing one validator check
        each published event once.

        Raises:
            SchemaViolationError: naming the field's JSON path and the rule it breaks.
        """
        if envelope is self._last:
            return
        payload = envelope.payload
        attributes = envelope.attributes
        pin: tuple[str, type] | None = None
        if not attributes or "dataschema" not in attributes:
            # the hot path: an event class pinned to a registered version (versions never
            # change once registered), its encoder and compiled checker remembered
            key = (envelope.topic, type(payload))
            ready = self._pinned.get(key)
            if ready is not None:
                pinned, pinned_encoder, pinned_checker = ready
                try:
                    data = pinned_encoder(payload)
                except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
                    data = codec.encode(payload)  # raises the codec's EncodeError
                try:
                    pinned_checker(data)
                except Exception:
                    self._refuse(envelope, boundary, pinned, data)
                self._last = envelope
                return
            target = self._targets.get(key)
            if target is None:
                target = self._targets[key] = self._target(envelope.topic, type(payload))
            entry: RegisteredSchema | None = self.source.cached(*target)
            if target[1] is not None:
                pin = key
        else:
            entry = self.schema_for(envelope)
        if entry is None:
            return
        checker = self._checker(entry)
        encoder = self._encoder(envelope, boundary, entry)
        if pin is not None:
            with self._lock:  # pinned to a version that exists: remembered
                self._pinned[pin] = (entry, encoder, checker)
        try:
            data = encoder(payload)
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
            data = codec.encode(payload)  # raises the codec's EncodeError, naming the class
        try:
            checker(data)
        except Exception:
            self._refuse(envelope, boundary, entry, data)
        self._last = envelope

    def _checker(self, entry: RegisteredSchema) -> Callable[[bytes], object]:
        checker = self._compiled.get(entry.schema)
        if checker is None:
            with self._lock:
                checker = self._compiled.get(entry.schema)
                if checker is None:
                    compile_ = compile_schema if entry.schema_type == "JSON" else _avro_checker
                    checker = self._compiled[entry.schema] = compile_(entry.parsed)
        return checker

    def _encoder(
        self, envelope: Envelope[Any], boundary: str, entry: RegisteredSchema
    ) -> Callable[[Any], bytes]:
        payload = envelope.payload
        cls = type(payload)
        encoder = self._encoders.get(cls)
        if encoder is None:
            if isinstance(payload, (bytes, bytearray, memoryview)):
                raise self._violation(
                    envelope.topic, boundary, entry.subject, entry.version, "$", "type",
                    "the data is binary, but the topic's registered schema describes JSON data",
                )  # fmt: skip
            encoder = self._encoders[cls] = codec.encode if is_pydantic_model(cls) else _encode
        return encoder

    def _refuse(
        self, envelope: Envelope[Any], boundary: str, entry: RegisteredSchema, data: bytes
    ) -> None:
        """Raise the violation the checker found, explained; return if the reference
        implementation accepts the data after all."""
        if entry.schema_type == "AVRO":
            try:
                self._compiled[entry.schema](data)
            except _AvroViolationError as exc:
                raise self._violation(
                    envelope.topic, boundary, entry.subject, entry.version, exc.field, exc.rule,
                    str(exc),
                ) from None  # fmt: skip
            return
        found = _explain(entry.parsed, data)
        if found is None:
            return  # the reference implementation accepts it
        field, rule, message = found
        raise self._violation(
            envelope.topic, boundary, entry.subject, entry.version, field, rule, message
        )

    def _target(self, topic: str, cls: type) -> tuple[str, int | None]:
        """``(subject, version)`` for events of ``cls`` on ``topic`` without a
        ``dataschema``: the class's declared version, else (``None``) the latest."""
        return subject_for(topic), version_of(cls) if event_type_for(topic) is cls else None

    def _violation(
        self,
        topic: str,
        boundary: str,
        subject: str,
        version: int,
        field: str,
        rule: str,
        message: str,
    ) -> SchemaViolationError:
        with self._lock:
            self.violations[(topic, boundary)] += 1
        return SchemaViolationError(
            f"the event on {topic!r} breaks rule {rule!r} at {field} of schema "
            f"{subject!r} version {version}: {message}",
            topic=topic,
            subject=subject,
            version=version,
            field=field,
            rule=rule,
        )
