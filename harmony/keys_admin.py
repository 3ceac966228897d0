"""`harmony keys backup | restore | rotate`: the key store's upkeep, each printing one line."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from harmony import bootstrap
from harmony.settings import Settings
from keys.keyring import KEY_BYTES, Keyring

NEXT = "master.key.next"


def backup(settings: Settings, path: Path) -> str:
    count = _with_keyring(settings, lambda keyring: keyring.backup(path))
    return f"backed up {count} keys to {path} (mode 600; the master key is not in it: keep that apart)"


def restore(settings: Settings, path: Path) -> str:
    return f"restored {_with_keyring(settings, lambda keyring: keyring.restore(path))} keys from {path}"


def _with_keyring(settings: Settings, work):
    keyring = bootstrap.keyring(settings)
    try:
        return work(keyring)
    finally:
        keyring.records.close()


def rotate(settings: Settings) -> str:
    """Re-wrap every key under a new master key. With HARMONY_MASTER_KEY set, the operator chose it
    (and names the old one in HARMONY_PREVIOUS_MASTER_KEY). Else a new key is made into master.key.next,
    kept on disk before any key is wrapped under it, and renamed over master.key once every key is:
    a rotation cut short is taken up again with the same new key."""
    current, previous = bootstrap.master_keys(settings)
    records = bootstrap.key_store(settings)
    try:
        if settings.master_key:
            count = Keyring(records, current, previous).rotate()
            return f"re-wrapped {count} keys under HARMONY_MASTER_KEY"
        new = bootstrap._master_key(bootstrap._generated_secret(
            settings, NEXT, lambda: base64.b64encode(os.urandom(KEY_BYTES)).decode()), NEXT)
        _sync(settings.state_dir / NEXT)
        _sync(settings.state_dir)
        count = Keyring(records, new, (current, *previous)).rotate()
    finally:
        records.close()
    os.replace(settings.state_dir / NEXT, settings.state_dir / "master.key")
    _sync(settings.state_dir)
    return f"re-wrapped {count} keys under a new master key in {settings.state_dir / 'master.key'}"


def _sync(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk: a key lost to a crash loses every key it wrapped."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
