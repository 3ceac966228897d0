"""The one encoder and decoder of events, with the upcaster hook and sealing.

Old events are never rewritten: a reader upcasts. An upcaster takes the raw
JSON object of an event at schema version N and returns it at N + 1;
`decode` chains them up to the version the code knows.

In the log a personal event is sealed (events/sealing.py): `Sealer` writes the records, `decode`
opens them with the keys given (`Unreadable` once the key is gone). A clear personal event (a log
written before sealing) is still read.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Iterable

import msgspec

from events.errors import HarmonyError
from events.sealing import Forgotten, InvalidTag, Keys, Unreadable, seal, unseal
from events.types import EVENT_TYPES, SCHEMA_VERSIONS, AccountOpened, AnyEvent, Event

Upcaster = Callable[[dict], dict]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)
_account_decoder = msgspec.json.Decoder(AccountOpened)


class _Header(msgspec.Struct):
    type: str | None = None
    schema_version: int | None = None  # every event carries it: one without is not an event of ours
    subject: str | None = None  # with `sealed`: a sealed event
    sealed: bytes | None = None


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


def decode(data: bytes, keys: Keys | None = None) -> AnyEvent:
    """Decode (and upcast) one event, opening it with `keys` if sealed; raise DecodeError with the
    reason, or Unreadable (a sealed event whose key is gone)."""
    return decode_sealed(data, keys)[0]


def decode_sealed(data: bytes, keys: Keys | None = None) -> tuple[AnyEvent, str | None]:
    """Decode one event as `decode` does, with the subject it was sealed under (None: in clear)."""
    header = _header(data)
    if header.sealed is not None:
        return _decode(_opened(header, keys)), header.subject
    return _decode(data, header), None


def _header(data: bytes) -> _Header:
    try:
        return _header_decoder.decode(data)
    except msgspec.DecodeError as error:  # ValidationError is one
        raise DecodeError(f"undecodable record: {error}") from None


def _decode(data: bytes, header: _Header | None = None) -> AnyEvent:
    try:
        header = header or _header_decoder.decode(data)
        if header.sealed is not None:
            raise DecodeError("sealed record inside a sealed record")
        if header.type is None:
            raise DecodeError("record has no event type")
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


def decode_account(data: bytes, keys: Keys | None = None) -> tuple[AccountOpened, str | None]:
    """Decode one record of the accounts topic (opening it with `keys` if sealed) with the subject
    it was sealed under (None: in clear), or raise DecodeError with the reason, or Unreadable."""
    header = _header(data)
    try:
        if header.sealed is not None:
            return _account_decoder.decode(_opened(header, keys)), header.subject
        return _account_decoder.decode(data), None
    except msgspec.DecodeError as error:  # ValidationError is one
        raise DecodeError(f"invalid account event: {error}") from None


def _opened(header: _Header, keys: Keys | None) -> bytes:
    if header.subject is None:
        raise DecodeError("sealed record without a subject")
    try:
        return unseal(header.subject, header.sealed, keys)
    except InvalidTag:
        raise DecodeError(f"sealed record does not open with subject {header.subject}'s key") from None


class Sealer:
    """Turns events into log records (key, value): a personal event sealed under its user's key and
    keyed by their subject, any other in clear under its own key."""

    def __init__(self, keys: Keys):
        self.keys = keys
        self._queued: set[str] = set()  # users whose subjects the next lookup fetches (or makes)
        self._lookup: asyncio.Future | None = None

    async def records(self, events: Iterable[Event]) -> list[tuple[bytes, bytes]]:
        """The records of these events; raises Forgotten if one is about a forgotten user (the
        subjects this process does not know yet are looked up, or made, in a worker thread)."""
        events = list(events)
        unknown = {e.user_id for e in events if e.personal and self.keys.known_subject(e.user_id) is None}
        if unknown:
            await self._learn(unknown)
        out = []
        for event in events:
            if not event.personal:
                out.append((event.key.encode(), encode(event)))
                continue
            subject = self.keys.known_subject(event.user_id)
            cipher = self.keys.cipher(subject) if subject is not None else None
            if cipher is None:
                raise Forgotten(f"user {event.user_id!r} asked to be forgotten")
            out.append((subject.encode(), seal(encode(event), subject, cipher)))
        return out

    async def _learn(self, users: set[str]) -> None:
        """Look up (or make) these users' subjects. Writers arriving while a lookup runs go together in
        the next one: one key-store transaction, one sync to disk, for every new user among them."""
        self._queued |= users
        while users:
            if self._lookup is None:
                batch, self._queued = self._queued, set()
                self._lookup = asyncio.ensure_future(self._look(batch))
            users = users - await asyncio.shield(self._lookup)

    async def _look(self, batch: set[str]) -> set[str]:
        try:
            await asyncio.to_thread(self.keys.subjects, list(batch))
        finally:
            self._lookup = None
        return batch
