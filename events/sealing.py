"""Sealed events: a user's events carry their content encrypted under the user's own key.

In the log a personal event (`Event.personal`) is `{"subject": S, "sealed": B}`: S is the random id
that names the user there (and the record's Kafka key), B a 12-byte nonce followed by the AES-256-GCM
encryption of the event's own JSON (events/codec.py), bound to S. Nothing else is in clear, not its
type, user id, movie or time. Once S's key is deleted (the user asked to be forgotten) the record is
`Unreadable`: every reader skips it and counts it. Events about no one (the catalogue, a
forgetting) stay clear.
"""

from __future__ import annotations

import os
from typing import Iterable, Protocol

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.errors import HarmonyError

NONCE = 12


class Keys(Protocol):
    """The subjects and their ciphers (keys.keyring.Keyring). Synchronous: a store may be a network
    away, so async code calls `subjects` and `load` from a worker thread."""

    def subjects(self, user_ids: list[str]) -> dict[str, str]:
        """The subject of each user id, made if it has none; forgotten ids are left out."""

    def known_subject(self, user_id: str) -> str | None:
        """The user's subject if this process knows it already (no store read)."""

    def load(self, subjects: list[str]) -> None:
        """Fetch the ciphers of these subjects that this process has not seen yet."""

    def cipher(self, subject: str) -> AESGCM | None:
        """A loaded subject's cipher; None once it is forgotten (or never loaded)."""

    def drop(self, subject: str) -> None:
        """The subject was forgotten: never open its events again."""


class Forgotten(HarmonyError):
    """The user asked to be forgotten: nothing more is written or read of them."""


class Unreadable(HarmonyError):
    """A sealed event whose key is gone: its user asked to be forgotten."""


class Sealed(msgspec.Struct, frozen=True):
    subject: str
    sealed: bytes  # nonce + ciphertext (msgspec writes bytes as base64)


_encoder = msgspec.json.Encoder()


def seal(clear: bytes, subject: str, cipher: AESGCM) -> bytes:
    """A clear event's JSON sealed for the log under its subject's cipher."""
    nonce = os.urandom(NONCE)
    return _encoder.encode(Sealed(subject, nonce + cipher.encrypt(nonce, clear, subject.encode())))


def unseal(subject: str, sealed: bytes, keys: Keys | None) -> bytes:
    """The clear JSON of a sealed event; raises Unreadable when its key is gone, InvalidTag when the
    bytes were not sealed under it (the caller dead-letters those)."""
    cipher = keys.cipher(subject) if keys is not None else None
    if cipher is None:
        raise Unreadable(f"subject {subject} was forgotten")
    return cipher.decrypt(sealed[:NONCE], sealed[NONCE:], subject.encode())


def record_subjects(record_keys: Iterable[bytes | None]) -> list[str]:
    """The subjects these records' Kafka keys may name, to load their keys before opening them (a
    catalogue event's key names a movie)."""
    return [key.decode("utf-8", "replace") for key in record_keys if key and not key.startswith(b"movie:")]
