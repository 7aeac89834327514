"""Payload bodies as msgspec JSON, with encoders and decoders built once per type.

A small private stand-in for :mod:`tidings.codec`: the transports call only
:func:`encode_payload` and :func:`decode_payload`, so swapping in the shared codec is a
two-line change.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ("decode_payload", "encode_payload")


def _enc_hook(value: object) -> object:
    dump = getattr(value, "model_dump", None)  # pydantic models
    if dump is not None:
        return dump(mode="json")
    raise NotImplementedError(f"cannot encode {type(value).__name__} objects as JSON")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_decoders: dict[type, Any] = {}

encode_payload = _encoder.encode
"""``encode_payload(payload) -> bytes``: the payload as compact JSON."""


def _decoder_for(payload_type: type) -> Any:
    validate = getattr(payload_type, "model_validate", None)  # pydantic models
    if validate is not None:

        def decode(body: bytes) -> Any:
            return validate(_any_decoder.decode(body))

        return decode
    return msgspec.json.Decoder(payload_type).decode


def decode_payload(body: bytes | memoryview, payload_type: type | None) -> Any:
    """Decode a JSON body as ``payload_type`` (plain JSON values when ``None``).

    Raises:
        msgspec.DecodeError: if the body is not JSON.
        msgspec.ValidationError or pydantic.ValidationError: if it does not fit the type.
    """
    if payload_type is None:
        return _any_decoder.decode(body)
    decode = _decoders.get(payload_type)
    if decode is None:
        decode = _decoders[payload_type] = _decoder_for(payload_type)
    return decode(body)
