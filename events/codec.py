"""The one encoder and decoder of events, with the upcaster hook.

Old events are never rewritten: a reader upcasts. An upcaster takes the raw
JSON object of an event at schema version N and returns it at N + 1;
`decode` chains them up to the version the code knows.
"""

from __future__ import annotations

from typing import Callable

import msgspec

from events.errors import HarmonyError
from events.types import EVENT_TYPES, SCHEMA_VERSIONS, AccountOpened, AnyEvent, Event

Upcaster = Callable[[dict], dict]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)
_account_decoder = msgspec.json.Decoder(AccountOpened)


class _Header(msgspec.Struct):
    type: str
    schema_version: int | None = None  # every event carries it: one without is not an event of ours


_header_decoder = msgspec.json.Decoder(_Header)


class DecodeError(HarmonyError):
    """A record that is not a valid event; the message says why."""


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that lifts `event_type` from `from_version` to the next version."""

    def register(function: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = function
        return function

    return register


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    """Decode (and upcast) one event, or raise DecodeError with the reason."""
    try:
        header = _header_decoder.decode(data)
        current = SCHEMA_VERSIONS.get(header.type)
        if current is None:
            raise DecodeError(f"unknown event type {header.type!r}")
        if header.schema_version is None:
            raise DecodeError(f"{header.type} without a schema_version")
        if header.schema_version == current:
            return _decoder.decode(data)
        if header.schema_version > current:
            raise DecodeError(
                f"{header.type} schema version {header.schema_version} is newer than this code ({current})"
            )
        raw = msgspec.json.decode(data)
        for version in range(header.schema_version, current):
            lift = _UPCASTERS.get((header.type, version))
            if lift is None:
                raise DecodeError(f"no upcaster for {header.type} v{version}")
            raw = lift(raw)
            raw["schema_version"] = version + 1
        return msgspec.convert(raw, EVENT_TYPES[header.type])
    except msgspec.ValidationError as error:
        raise DecodeError(f"invalid event: {error}") from None
    except msgspec.DecodeError as error:
        raise DecodeError(f"undecodable record: {error}") from None


def decode_account(data: bytes) -> AccountOpened:
    """Decode one record of the accounts topic, or raise DecodeError with the reason."""
    try:
        return _account_decoder.decode(data)
    except msgspec.DecodeError as error:  # ValidationError is one
        raise DecodeError(f"invalid account event: {error}") from None
