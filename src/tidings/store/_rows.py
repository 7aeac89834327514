"""The stored form of an event, shared by every store: row layout, hash chain, decoding.

Every store keeps the same columns, in this order (:data:`Row`)::

    position, id, stream, stream_version, type_name, type_version, topic, time, key, source,
    headers, payload, hash

``headers`` and ``payload`` are JSON text, ``hash`` is 64 lowercase hex digits.
``headers`` is the envelope's headers as a JSON object, ``None`` when there are none; an
envelope that carries CloudEvents attributes (:attr:`Envelope.attributes`) or binary data
(a ``bytes`` payload) stores the JSON array ``[headers, attributes]``, with a third element
``"bytes"`` when the payload column holds base64 text of binary data. An object and an array
cannot be confused, so rows written before attributes existed read as they always did. Keeping one layout lets the hash chain, the append planning and
the decoding be written once here, and the SQL stores return rows that need no reshaping.
Text rather than bytes is deliberate: CPython's sqlite3 binds ``str`` directly but sends
``bytes`` and ``None`` through its adapter lookup, which costs more per value than the rest
of the binding.

The chain: ``hash(n) = sha256(hash(n-1) || meta(n) || headers(n) || payload(n))`` over the
raw 32-byte digests and the UTF-8 bytes of the texts, with ``hash(0)`` 32 zero bytes and
``meta(n)`` the JSON array of the record's scalar columns followed by the lengths of
``headers`` (null when absent) and ``payload``. The meta array is self-delimiting and
carries the lengths, so the hashed content is unambiguous.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import msgspec

from tidings import codec
from tidings.event import NO_HEADERS, Envelope, event_type_for, topic_of, version_of
from tidings.exceptions import (
    ConcurrencyError,
    DecodeError,
    TopicRequiredError,
    UnknownEventTypeError,
)
from tidings.store.records import StoredEvent, StreamState
from tidings.store.upcasting import Upcasters

__all__ = (
    "GENESIS",
    "Draft",
    "Row",
    "RowDecoder",
    "Unknown",
    "check_expected",
    "draft",
    "plan_append",
    "record_hash",
)

Row: TypeAlias = tuple[
    int,  # 0 position
    str,  # 1 id
    str | None,  # 2 stream
    int | None,  # 3 stream_version
    str | None,  # 4 type_name
    int,  # 5 type_version
    str,  # 6 topic
    int,  # 7 time
    str | None,  # 8 key
    str,  # 9 source
    str | None,  # 10 headers
    str,  # 11 payload
    str,  # 12 hash (hex)
]
Draft: TypeAlias = tuple[
    str,  # 0 id
    str | None,  # 1 type_name
    int,  # 2 type_version
    str,  # 3 topic
    int,  # 4 time
    str | None,  # 5 key
    str,  # 6 source
    str | None,  # 7 headers
    str,  # 8 payload
]
Unknown: TypeAlias = Literal["error", "skip", "raw"]

GENESIS = "0" * 64
"""The hash the first record chains to."""

_meta = msgspec.json.Encoder().encode
_headers_encode = msgspec.json.Encoder(order="sorted").encode
_json_decode = msgspec.json.Decoder().decode
# A digest of nothing, copied per record: cheaper than ``hashlib.sha256(data)``, which looks
# the algorithm up by name in OpenSSL each time (never updated, so copies share no state).
_SHA256_START = hashlib.sha256()
_plain_types: set[type] = {dict, list, tuple, str, int, float, bool, type(None)}
_binary_types = (bytes, bytearray, memoryview)


def record_hash(prev: bytes, row: Sequence[Any]) -> bytes:
    """The chain digest of ``row`` (its hash column, if present, is ignored) after ``prev``.

    ``prev`` is the previous record's raw 32-byte digest (``bytes.fromhex`` of its hash).
    """
    return _digest(prev, row[:10], row[10], row[11])


def _digest(prev: bytes, scalars: Sequence[Any], headers: str | None, payload: str) -> bytes:
    """:func:`record_hash` of a row given as its ten scalar columns, headers and payload."""
    meta = _meta((*scalars, None if headers is None else len(headers), len(payload)))
    # One update of the concatenation (the same bytes, so the same digest as updating with
    # each part): fewer calls into OpenSSL per record.
    digest = _SHA256_START.copy()
    if headers:
        digest.update(b"".join((prev, meta, headers.encode(), payload.encode())))
    else:
        digest.update(b"".join((prev, meta, payload.encode())))
    return digest.digest()


def draft(envelope: Envelope[Any], decoder: RowDecoder) -> Draft:
    """The stored form of ``envelope``, before a position is given to it.

    Teaches ``decoder`` the payload's class under its type name, so the store that wrote an
    event can always read it back.

    Raises:
        EncodeError: if the payload cannot be encoded.
        TypeError: if ``envelope`` is not an :class:`~tidings.event.Envelope`.
    """
    if type(envelope) is not Envelope:
        raise TypeError(f"a store appends Envelope objects, not {type(envelope).__name__}")
    payload = envelope.payload
    cls = type(payload)
    type_name: str | None
    if cls in _plain_types:
        type_name, version = None, 0
    else:
        try:
            type_name = topic_of(cls)
        except TopicRequiredError:
            _plain_types.add(cls)
            type_name, version = None, 0
        else:
            version = version_of(cls)
            if decoder.types.get(type_name) is not cls:
                decoder.learn(type_name, cls)
    headers = envelope.headers
    stored_headers = _headers_encode(dict(headers)).decode() if headers else None
    if envelope.attributes or cls in _binary_types:
        extra: tuple[str, ...] = ("bytes",) if cls in _binary_types else ()
        stored_headers = _headers_encode(
            (dict(headers), dict(envelope.attributes), *extra)
        ).decode()
    return (
        envelope.id,
        type_name,
        version,
        envelope.topic,
        envelope.time,
        envelope.key,
        envelope.source,
        stored_headers,
        codec.encode(payload).decode(),
    )


def plan_append(
    drafts: Sequence[Draft],
    known: Mapping[str, int],
    *,
    stream: str | None,
    stream_version: int,
    expected_version: int | StreamState,
    last_position: int,
    last_hash: str,
) -> tuple[list[Row], list[int]]:
    """Decide what an append writes, given what the store holds; pure, so every store agrees.

    Args:
        drafts: the events to append, in order.
        known: for those of the drafts' ids already stored, their positions.
        stream: the stream appended to, or ``None``.
        stream_version: the stream's current version (0 when it has no events, or no stream).
        expected_version: the caller's ``expected_version``.
        last_position: the log's last position (0 when empty).
        last_hash: the hex hash of the record at ``last_position`` (:data:`GENESIS` when empty).

    Returns:
        The rows to insert, in position order, and the position of each draft: a known id
        gets its original position; an id repeated within the batch gets the position of its
        first occurrence.

    Raises:
        ConcurrencyError: if some event is new and ``expected_version`` does not match
            ``stream_version``. When every id is already stored nothing is written and the
            check is skipped, so retrying a committed append succeeds.
    """
    positions: list[int]
    fresh: Sequence[Draft]
    ids = [item[0] for item in drafts]
    if not known and len(set(ids)) == len(ids):  # every id new and once: the usual case
        fresh = drafts
        positions = list(range(last_position + 1, last_position + 1 + len(drafts)))
    else:
        positions, kept = [], []
        assigned: dict[str, int] = {}
        next_position = last_position
        for item, event_id in zip(drafts, ids, strict=True):
            position = known.get(event_id) or assigned.get(event_id)
            if position is None:
                next_position += 1
                assigned[event_id] = position = next_position
                kept.append(item)
            positions.append(position)
        fresh = kept
    if not fresh:
        return [], positions
    if expected_version is not StreamState.ANY and stream is not None:
        wanted = 0 if expected_version is StreamState.NO_STREAM else expected_version
        if stream_version != wanted:
            raise ConcurrencyError(stream=stream, expected=wanted, actual=stream_version)
    rows: list[Row] = []
    prev = bytes.fromhex(last_hash)
    position = last_position
    version = stream_version
    for event_id, type_name, type_version, topic, time, key, source, headers, payload in fresh:
        position += 1
        row_version = None
        if stream is not None:
            version += 1
            row_version = version
        scalars = (
            position,
            event_id,
            stream,
            row_version,
            type_name,
            type_version,
            topic,
            time,
            key,
            source,
        )
        prev = _digest(prev, scalars, headers, payload)
        rows.append((*scalars, headers, payload, prev.hex()))
    return rows, positions


def check_expected(stream: str | None, expected_version: int | StreamState) -> None:
    """Validate an ``expected_version`` argument before any I/O.

    Raises:
        ValueError: if an exact or ``NO_STREAM`` expectation is given without a stream, or the
            version is negative or not an int.
    """
    if expected_version is StreamState.ANY:
        return
    if stream is None:
        raise ValueError(f"expected_version={expected_version!r} needs a stream: pass stream='...'")
    if isinstance(expected_version, StreamState):
        return
    if (
        not isinstance(expected_version, int)
        or isinstance(expected_version, bool)
        or expected_version < 0
    ):
        raise ValueError(
            f"expected_version is ANY, NO_STREAM or a version >= 0, not {expected_version!r}"
        )


_Entry: TypeAlias = tuple[type | None, int]
_PLAIN_ENTRY: _Entry = (None, 0)


class RowDecoder:
    """Turns rows into :class:`StoredEvent` records: resolves classes, upcasts, decodes.

    ``types`` maps type names to classes; names missing from it are looked up among the
    classes declared with ``@tidings.event``.
    """

    __slots__ = ("_entries", "types", "upcasters")

    def __init__(self, types: dict[str, type], upcasters: Upcasters) -> None:
        self.types = types
        self.upcasters = upcasters
        self._entries: dict[str | None, _Entry] = {None: _PLAIN_ENTRY}

    def learn(self, type_name: str, cls: type) -> None:
        """Decode records of ``type_name`` into ``cls`` from now on."""
        self.types[type_name] = cls
        self._entries.pop(type_name, None)

    def _resolve(self, type_name: str) -> _Entry | None:
        cls = self.types.get(type_name) or event_type_for(type_name)
        if cls is None:
            return None
        entry = self._entries[type_name] = (cls, version_of(cls))
        return entry

    def decode(
        self,
        rows: Iterable[Sequence[Any]],
        unknown: Unknown = "error",
        match: Callable[[str], bool] | None = None,
    ) -> list[StoredEvent]:
        """Decode ``rows`` (in order), dropping those whose topic ``match`` rejects.

        Raises:
            UnknownEventTypeError: for a type no class is known for, with ``unknown="error"``.
            DecodeError: naming the position and type of a payload that does not decode.
        """
        out: list[StoredEvent] = []
        append = out.append
        entries = self._entries
        decode = codec.decode
        for row in rows:
            topic = row[6]
            if match is not None and not match(topic):
                continue
            type_name = row[4]
            entry = entries.get(type_name)
            if entry is None:
                assert type_name is not None  # None is always in the table
                entry = self._resolve(type_name)
            try:
                headers, attributes, binary = _stored_headers(row[10])
                if binary:
                    payload = base64.b64decode(decode(row[11]))
                elif entry is None:
                    if unknown == "skip":
                        continue
                    if unknown != "raw":
                        raise UnknownEventTypeError(type_name=str(type_name), position=row[0])
                    payload = decode(row[11])
                elif row[5] == entry[1]:
                    payload = decode(row[11], entry[0])
                else:
                    payload = self._upcast(row, entry)
                envelope = Envelope(
                    topic, payload, row[7], row[8], row[9], headers, row[1], "", attributes
                )
            except (DecodeError, msgspec.DecodeError) as exc:
                name = "plain JSON" if type_name is None else repr(type_name)
                raise DecodeError(
                    f"the record at position {row[0]} (type {name}, version {row[5]}) "
                    f"does not decode: {exc}",
                    type_name=type_name,
                    position=row[0],
                ) from exc
            append(StoredEvent(row[0], row[2], row[3], type_name, row[5], envelope, row[12]))
        return out

    def _upcast(self, row: Sequence[Any], entry: _Entry) -> Any:
        cls, version = entry
        value = codec.decode(row[11])
        value = self.upcasters.upcast(row[4], value, row[5], version)
        return codec.convert(value, cls)


def _stored_headers(text: str | None) -> tuple[Mapping[str, str], Mapping[str, str], bool]:
    """The headers, the CloudEvents attributes and whether the payload is binary data, from
    a ``headers`` column (see the module docstring)."""
    if text is None:
        return NO_HEADERS, NO_HEADERS, False
    stored = _json_decode(text)
    if type(stored) is dict:
        return MappingProxyType(stored), NO_HEADERS, False
    headers, attributes, *flags = stored
    return (
        MappingProxyType(headers) if headers else NO_HEADERS,
        MappingProxyType(attributes) if attributes else NO_HEADERS,
        flags == ["bytes"],
    )
