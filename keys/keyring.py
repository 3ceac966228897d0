"""The keyring: subjects and their data keys, unwrapped with the master key as they are needed.

What sealing and opening events use (`events.sealing.Keys`). Every call is synchronous (a store
may be a network away): async code calls it from a worker thread. Ciphers are kept in memory once
loaded, a forgotten subject's as None, so a process that saw the forgetting never opens that
subject's events again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import uuid
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.errors import HarmonyError
from keys.records import KeyRecords, SubjectRow

KEY_BYTES = 32  # AES-256
_NONCE = 12
_CHECK = b"moviEharmony master key check"
CACHED = 200_000  # subjects whose cipher a process keeps at most (about 60 MB)


class WrongMasterKey(HarmonyError):
    """The key store's keys were wrapped under another master key than the one given."""


class Keyring:
    def __init__(self, records: KeyRecords, master: bytes, previous: tuple[bytes, ...] = ()):
        """`master` wraps new keys; `previous` ones still unwrap keys not yet re-wrapped (a rotation)."""
        self.records = records
        self._master = AESGCM(master)
        self._unwrappers = [self._master, *(AESGCM(key) for key in previous)]
        self._lock = threading.Lock()
        self._ciphers: dict[str, AESGCM | None] = {}
        self._subjects: dict[str, str] = {}
        # Checked once, so a wrong master key is one clear error at start, not every event unreadable.
        self._unwrap(records.put_setting("check", self._wrap(_CHECK, b"check")), b"check")
        self._pepper = self._unwrap(records.put_setting("pepper", self._wrap(os.urandom(KEY_BYTES), b"pepper")),
                                    b"pepper")

    # What events.sealing.Keys asks for.

    def subjects(self, user_ids: list[str]) -> dict[str, str]:
        """The subject of each user id, a new one (with a new key) for those without; forgotten ids
        are left out of the answer."""
        missing = [user for user in dict.fromkeys(user_ids) if user not in self._subjects]
        if missing:
            found = self.records.by_user(missing)
            new = [user for user in missing if user not in found]
            if new:
                digests = {user: self.digest(user) for user in new}
                gone = self.records.forgotten(list(digests.values()))
                rows = [self._new_row(user) for user, digest in digests.items() if digest not in gone]
                found.update(self.records.claim(rows) if rows else {})
            with self._lock:
                self._remember(found.values())
        return {user: self._subjects[user] for user in user_ids if user in self._subjects}

    def known_subject(self, user_id: str) -> str | None:
        return self._subjects.get(user_id)

    def load(self, subjects: list[str]) -> None:
        """Fetch the ciphers of these subjects that this process has not seen yet."""
        missing = [subject for subject in dict.fromkeys(subjects) if subject not in self._ciphers]
        if not missing:
            return
        found = self.records.by_subject(missing)
        with self._lock:
            self._remember(found.values())
            for subject in missing:
                if subject not in found:
                    self._ciphers[subject] = None  # gone (forgotten): it never comes back

    def cipher(self, subject: str) -> AESGCM | None:
        """The subject's cipher, if loaded and not forgotten."""
        return self._ciphers.get(subject)

    def drop(self, subject: str) -> None:
        """The subject was forgotten: never open its events again in this process."""
        with self._lock:
            self._ciphers[subject] = None
            for user, held in list(self._subjects.items()):
                if held == subject:
                    del self._subjects[user]

    def data_keys(self) -> dict[str, bytes]:
        """Every subject's data key, unwrapped (what training hands its tasks)."""
        return {row.subject: self._unwrap(row.wrapped, row.subject.encode())
                for rows in self.records.rows() for row in rows}

    # Forgetting.

    def digest(self, user_id: str) -> bytes:
        """What the key store keeps of a forgotten user id: a keyed digest, never the id."""
        return hmac.new(self._pepper, user_id.encode(), hashlib.sha256).digest()

    def forgotten_of(self, user_ids: list[str]) -> set[str]:
        """Those of these user ids that asked to be forgotten (one read of the key store)."""
        digests = {self.digest(user_id): user_id for user_id in user_ids}
        return {digests[digest] for digest in self.records.forgotten(list(digests))} if digests else set()

    def subject_of(self, user_id: str) -> str | None:
        """The user's subject, without making one."""
        row = self.records.by_user([user_id]).get(user_id)
        return row.subject if row else None

    def retire(self, user_id: str) -> None:
        """Mark the user id forgotten: no new key is made for it from now on (the first step)."""
        self.records.add_forgotten([self.digest(user_id)])

    def forget(self, user_id: str) -> str | None:
        """Delete the user's key and mapping (after `retire`); answer their subject, if they had one."""
        row = self.records.delete(user_id)
        if row is not None:
            self.drop(row.subject)
        return row.subject if row else None

    # Maintenance.

    def rotate(self) -> int:
        """Wrap every key, and the keyring's own settings, under the master key (keys wrapped under a
        previous one are re-wrapped); answer how many keys were re-wrapped. Safe to run again after a crash."""
        for name in ("check", "pepper"):
            self.records.put_setting(name, self._wrap(self._unwrap(self.records.setting(name), name.encode()),
                                                      name.encode()), replace=True)
        done = 0
        for rows in self.records.rows():
            fresh = [row._replace(wrapped=self._wrap(self._unwrap(row.wrapped, row.subject.encode()),
                                                     row.subject.encode())) for row in rows]
            self.records.rewrap(fresh)
            done += len(fresh)
        return done

    def backup(self, path: Path) -> int:
        """Write every wrapped key, the settings and the forgotten digests to `path` (mode 600: it
        names every user), and answer how many keys. The master key is not in it: keep that apart."""
        count = 0
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # a file that was there keeps its mode otherwise
        with os.fdopen(descriptor, "wb") as file:
            for name in ("check", "pepper"):
                file.write(msgspec.json.encode({"setting": name, "value": self.records.setting(name)}) + b"\n")
            for digest in self.records.all_forgotten():
                file.write(msgspec.json.encode({"forgotten": digest}) + b"\n")
            for rows in self.records.rows():
                for row in rows:
                    file.write(msgspec.json.encode({"user_id": row.user_id, "subject": row.subject,
                                                    "wrapped": row.wrapped}) + b"\n")
                count += len(rows)
        return count

    def restore(self, path: Path) -> int:
        """Put a backup's keys back (those whose user id has none), leaving out user ids forgotten
        since: answer how many keys were restored."""
        try:
            lines = [msgspec.json.decode(line, type=dict) for line in Path(path).read_bytes().splitlines()
                     if line.strip()]
            settings = {line["setting"]: base64.b64decode(line["value"]) for line in lines if "setting" in line}
        except (msgspec.DecodeError, KeyError, ValueError) as error:
            raise HarmonyError(f"{path} is not a key backup (`harmony keys backup` writes one): {error}") from None
        for name, value in settings.items():
            self._unwrap(value, name.encode())  # a backup under another master key changes nothing
        for name, value in settings.items():
            self.records.put_setting(name, value, replace=True)
        self._pepper = self._unwrap(self.records.setting("pepper"), b"pepper")  # the backup's: its digests
        self.records.add_forgotten([base64.b64decode(line["forgotten"]) for line in lines if "forgotten" in line])
        rows = [SubjectRow(line["user_id"], line["subject"], base64.b64decode(line["wrapped"]))
                for line in lines if "user_id" in line]
        digests = [self.digest(row.user_id) for row in rows]
        gone = self.records.forgotten(digests)
        kept = [row for row, digest in zip(rows, digests) if digest not in gone]
        before = self.records.by_user([row.user_id for row in kept])
        self.records.claim(kept)
        return len(kept) - len(before)

    # Inside.

    def _new_row(self, user_id: str) -> SubjectRow:
        subject = uuid.uuid4().hex
        return SubjectRow(user_id, subject, self._wrap(AESGCM.generate_key(bit_length=256), subject.encode()))

    def _remember(self, rows) -> None:
        if len(self._ciphers) > CACHED:
            self._ciphers = {subject: None for subject, cipher in self._ciphers.items() if cipher is None}
            self._subjects.clear()
        for row in rows:
            self._subjects[row.user_id] = row.subject
            self._ciphers[row.subject] = AESGCM(self._unwrap(row.wrapped, row.subject.encode()))

    def _wrap(self, secret: bytes, bound_to: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._master.encrypt(nonce, secret, bound_to)

    def _unwrap(self, wrapped: bytes, bound_to: bytes) -> bytes:
        for master in self._unwrappers:
            try:
                return master.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], bound_to)
            except InvalidTag:
                continue
        raise WrongMasterKey("the key store was written under another master key: set HARMONY_MASTER_KEY "
                             "(or <state dir>/master.key) to the one it was made with")
