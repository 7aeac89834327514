"""Payload codecs: JSON bytes for every kind of event, built once per type.

:func:`encode` turns a payload into JSON bytes and :func:`decode` turns them back into an
instance of a given type. Supported payloads:

- frozen (or plain) dataclasses, ``msgspec.Struct`` classes, and anything else msgspec
  encodes natively (``datetime``, ``UUID``, ``Decimal``, enums, nested containers...);
- pydantic v2 models, through their own ``model_dump_json`` / ``model_validate_json`` /
  ``model_validate``; pydantic is optional and never imported by this module: a class is
  treated as a pydantic model only when pydantic is already imported and the class derives
  from ``pydantic.BaseModel``;
- plain JSON values (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``),
  which :func:`decode` returns when no type is given.

The encoder and decoder for a type are built on first use and cached, so the hot path is one
dictionary lookup and one msgspec call. Every failure is a typed
:class:`~tidings.exceptions.EncodeError` or :class:`~tidings.exceptions.DecodeError` whose
message names the type and, for decoding, the JSON path msgspec found at fault.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar, overload

import msgspec

from tidings.exceptions import DecodeError, EncodeError

__all__ = ("convert", "decode", "decoder", "encode", "encoder", "is_pydantic_model")

T = TypeVar("T")

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_encoders: dict[type, Callable[[Any], bytes]] = {}
_decoders: dict[Any, Callable[[bytes | str], Any]] = {}
_converters: dict[Any, Callable[[Any], Any]] = {}


def is_pydantic_model(cls: object) -> bool:
    """Whether ``cls`` is a pydantic v2 model class (without importing pydantic)."""
    module = sys.modules.get("pydantic")
    if module is None or not isinstance(cls, type):
        return False
    base: type = module.BaseModel
    return issubclass(cls, base)


def _pydantic_encoder(model: Any) -> bytes:
    text: str = model.model_dump_json()
    return text.encode()


def _build_encoder(cls: type) -> Callable[[Any], bytes]:
    if is_pydantic_model(cls):
        return _pydantic_encoder
    return _json_encode


def encode(payload: object) -> bytes:
    """Encode ``payload`` as compact JSON bytes.

    Raises:
        EncodeError: if the payload's type, or a value inside it, cannot be encoded; the
            message names the payload's class and msgspec's (or pydantic's) reason.
    """
    cls = type(payload)
    try:
        encoder = _encoders[cls]
    except KeyError:
        encoder = _encoders[cls] = _build_encoder(cls)
    try:
        return encoder(payload)
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(
            f"cannot encode a {cls.__qualname__} payload as JSON: {exc}", type_=cls
        ) from exc


def encoder(cls: type) -> Callable[[Any], bytes]:
    """The function :func:`encode` calls for payloads of class ``cls`` (built once, then
    cached), for hot paths that encode many payloads of one class: it raises the encoding
    library's error (``msgspec.EncodeError``, ``TypeError``...) instead of
    :class:`~tidings.exceptions.EncodeError` (call :func:`encode` for the typed one)."""
    try:
        return _encoders[cls]
    except KeyError:
        built = _encoders[cls] = _build_encoder(cls)
        return built


def _type_name(type_: Any) -> str:
    return getattr(type_, "__qualname__", None) or repr(type_)


def _build_decoder(type_: Any) -> Callable[[bytes | str], Any]:
    if type_ is None or type_ is Any:
        return _json_decode
    if is_pydantic_model(type_):
        validate: Callable[[bytes | str], Any] = type_.model_validate_json
        return validate
    try:
        return msgspec.json.Decoder(type_).decode
    except TypeError as exc:
        raise DecodeError(
            f"cannot decode into {_type_name(type_)}: {exc}", type_name=_type_name(type_)
        ) from exc


def _build_converter(type_: Any) -> Callable[[Any], Any]:
    if type_ is None or type_ is Any:
        return lambda value: value
    if is_pydantic_model(type_):
        validate: Callable[[Any], Any] = type_.model_validate
        return validate

    def convert_value(value: Any) -> Any:
        return msgspec.convert(value, type_)

    return convert_value


@overload
def decode(data: bytes | str, type_: type[T]) -> T: ...
@overload
def decode(data: bytes | str, type_: None = None) -> Any: ...
def decode(data: bytes | str, type_: type[Any] | None = None) -> Any:
    """Decode JSON ``data`` (bytes or text) into an instance of ``type_``, or plain JSON values.

    Raises:
        DecodeError: if ``data`` is not valid JSON or does not fit ``type_``; the message
            names the type and the JSON path at fault (``$.amount``...).
    """
    try:
        decoder = _decoders[type_]
    except KeyError:
        decoder = _decoders[type_] = _build_decoder(type_)
    try:
        return decoder(data)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        name = "JSON" if type_ is None else _type_name(type_)
        raise DecodeError(f"cannot decode {name}: {exc}", type_name=name) from exc


def decoder(type_: type[Any] | None = None) -> Callable[[bytes | str], Any]:
    """The function :func:`decode` calls for ``type_`` (built once, then cached), for hot
    paths that turn a failure into their own outcome: it raises the decoding library's
    error (``msgspec.DecodeError``, ``ValueError`` or ``TypeError``) instead of
    :class:`~tidings.exceptions.DecodeError`.

    Raises:
        DecodeError: if ``type_`` cannot be decoded into at all.
    """
    try:
        return _decoders[type_]
    except KeyError:
        built = _decoders[type_] = _build_decoder(type_)
        return built


@overload
def convert(value: object, type_: type[T]) -> T: ...
@overload
def convert(value: object, type_: None = None) -> Any: ...
def convert(value: object, type_: type[Any] | None = None) -> Any:
    """Convert plain JSON values (as :func:`decode` returns them untyped) into ``type_``.

    Used after upcasting, when an old payload was rewritten as plain values.

    Raises:
        DecodeError: if ``value`` does not fit ``type_``; the message names the type and path.
    """
    try:
        converter = _converters[type_]
    except KeyError:
        converter = _converters[type_] = _build_converter(type_)
    try:
        return converter(value)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        name = _type_name(type_)
        raise DecodeError(f"cannot convert a value into {name}: {exc}", type_name=name) from exc
