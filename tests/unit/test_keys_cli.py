"""`harmony keys backup | restore | rotate` on a state dir with the SQLite key store and the file
master key (or HARMONY_MASTER_KEY), through harmony.cli.main."""

from __future__ import annotations

import base64
import os

import pytest

from harmony import bootstrap, keys_admin
from harmony.cli import main
from harmony.settings import load
from keys.keyring import Keyring, WrongMasterKey
from keys.sqlite_keys import SQLiteKeys
from tests.keystore_contract import opens, sealed

USERS = ["ana", "ben", "cy"]


@pytest.fixture
def state(monkeypatch, tmp_path):
    """A state dir whose key store holds three users' keys; answers their subjects and a message each."""
    monkeypatch.setenv("HARMONY_STATE_DIR", str(tmp_path))
    for name in ("HARMONY_MASTER_KEY", "HARMONY_PREVIOUS_MASTER_KEY", "HARMONY_KEY_STORE"):
        monkeypatch.delenv(name, raising=False)
    keyring = bootstrap.keyring(load())
    subjects = keyring.subjects(USERS)
    messages = sealed(keyring, subjects)
    keyring.records.close()
    return subjects, messages


def keyring_opens(subjects, messages) -> bool:
    keyring = bootstrap.keyring(load())
    try:
        return keyring.subjects(USERS) == subjects and opens(keyring, subjects, messages)
    finally:
        keyring.records.close()


def test_backup_then_restore_into_a_lost_key_store(state, tmp_path, capsys):
    assert main(["keys", "backup", str(tmp_path / "keys.backup")]) == 0
    assert capsys.readouterr().out.startswith(f"backed up 3 keys to {tmp_path / 'keys.backup'} (mode 600")
    for path in tmp_path.glob("keys.db*"):
        path.unlink()
    assert main(["keys", "restore", str(tmp_path / "keys.backup")]) == 0
    assert capsys.readouterr().out == f"restored 3 keys from {tmp_path / 'keys.backup'}\n"
    assert keyring_opens(*state)


def test_rotate_makes_a_new_master_key_file_that_alone_opens_every_key(state, tmp_path, capsys):
    old = (tmp_path / "master.key").read_bytes()
    assert main(["keys", "rotate"]) == 0
    assert capsys.readouterr().out == f"re-wrapped 3 keys under a new master key in {tmp_path / 'master.key'}\n"
    assert (tmp_path / "master.key").read_bytes() != old and not (tmp_path / "master.key.next").exists()
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert keyring_opens(*state)
    records = SQLiteKeys(tmp_path / "keys.db")
    with pytest.raises(WrongMasterKey):
        Keyring(records, base64.b64decode(old))
    records.close()


def test_an_interrupted_rotation_is_taken_up_again_with_its_new_key(state, tmp_path, monkeypatch, capsys):
    def crash(source, target):
        raise PermissionError("cut short")

    old = (tmp_path / "master.key").read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(keys_admin.os, "replace", crash)
        assert main(["keys", "rotate"]) == 1
    assert capsys.readouterr().err == "harmony keys: cut short\n"
    new = (tmp_path / "master.key.next").read_bytes()
    assert (tmp_path / "master.key").read_bytes() == old
    assert keyring_opens(*state)  # a process started meanwhile unwraps under either key
    assert main(["keys", "rotate"]) == 0
    assert (tmp_path / "master.key").read_bytes() == new and not (tmp_path / "master.key.next").exists()
    assert keyring_opens(*state)


def test_rotate_to_a_master_key_in_the_environment(state, tmp_path, monkeypatch, capsys):
    new = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("HARMONY_MASTER_KEY", new)
    assert main(["keys", "backup", str(tmp_path / "keys.backup")]) == 1
    assert capsys.readouterr().err.startswith("harmony keys: the key store was written under another master key")
    monkeypatch.setenv("HARMONY_PREVIOUS_MASTER_KEY", (tmp_path / "master.key").read_text())
    assert main(["keys", "rotate"]) == 0
    assert capsys.readouterr().out == "re-wrapped 3 keys under HARMONY_MASTER_KEY\n"
    monkeypatch.delenv("HARMONY_PREVIOUS_MASTER_KEY")
    assert keyring_opens(*state)


def test_a_missing_backup_is_one_line(state, tmp_path, capsys):
    assert main(["keys", "restore", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harmony keys: ") and "nothing" in err and err.count("\n") == 1


def test_a_file_that_is_not_a_backup_is_one_line_and_changes_nothing(state, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a backup\n")
    assert main(["keys", "restore", str(tmp_path / "notes.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harmony keys: ") and "is not a key backup" in err and err.count("\n") == 1
    assert keyring_opens(*state)
