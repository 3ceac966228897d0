"""The key-store contract: what the keyring asks of a `KeyRecords` adapter, and the keyring's own
promises over it, as one abstract test case that every adapter's test class inherits.

A subclass provides the `records` and `another` fixtures (two empty, separate stores) and
`other_handle(records)` (a second connection to the same store, as another process has).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from keys.keyring import Keyring, WrongMasterKey
from keys.records import KeyRecords, SubjectRow

OLD, NEW = os.urandom(32), os.urandom(32)


def row(user: str, subject: str | None = None) -> SubjectRow:
    return SubjectRow(user, subject or f"s-{user}", os.urandom(60))


def sealed(keyring: Keyring, subjects: dict[str, str]) -> dict[str, bytes]:
    """A message sealed under each user's data key (nonce zero: a test only)."""
    keyring.load(list(subjects.values()))
    return {user: keyring.cipher(subject).encrypt(bytes(12), user.encode(), None) for user, subject in subjects.items()}


def opens(keyring: Keyring, subjects: dict[str, str], messages: dict[str, bytes]) -> bool:
    keyring.load(list(subjects.values()))
    return all(keyring.cipher(subjects[user]).decrypt(bytes(12), message, None) == user.encode()
               for user, message in messages.items())


class KeyStoreContract:
    @pytest.fixture
    def records(self) -> KeyRecords:
        raise NotImplementedError

    @pytest.fixture
    def another(self) -> KeyRecords:
        raise NotImplementedError

    def other_handle(self, records: KeyRecords) -> KeyRecords:
        raise NotImplementedError

    # -- the port ---------------------------------------------------------------------------

    def test_a_claim_keeps_the_first_row_of_a_user_id(self, records):
        first, second, ben = row("ana", "s1"), row("ana", "s2"), row("ben")
        assert records.claim([first, ben]) == {"ana": first, "ben": ben}
        assert records.claim([second]) == {"ana": first}
        assert records.by_user(["ana", "nobody"]) == {"ana": first}
        assert records.by_subject(["s1", "s2", "nothing"]) == {"s1": first}

    def test_concurrent_claims_of_one_user_id_all_answer_the_one_kept_row(self, records):
        handles = [records, self.other_handle(records)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: handles[i % 2].claim([row("ana", f"s{i}")])["ana"], range(16)))
        kept = records.by_user(["ana"])["ana"]
        assert answers == [kept] * 16
        assert records.by_subject([f"s{i}" for i in range(16)]) == {kept.subject: kept}

    def test_lookups_by_many_ids_answer_every_row(self, records):
        rows = [row(f"user{i:04}") for i in range(600)]
        assert records.claim(rows) == {r.user_id: r for r in rows}
        assert records.by_user([r.user_id for r in rows]) == {r.user_id: r for r in rows}
        assert records.by_subject([r.subject for r in rows]) == {r.subject: r for r in rows}

    def test_delete_answers_the_row_and_removes_both_lookups(self, records):
        ana, ben = row("ana"), row("ben")
        records.claim([ana, ben])
        assert records.delete("ana") == ana
        assert records.by_user(["ana"]) == {} and records.by_subject([ana.subject]) == {}
        assert records.delete("ana") is None
        assert records.by_user(["ana", "ben"]) == {"ben": ben}

    def test_forgotten_digests(self, records):
        assert records.forgotten([b"a"]) == set() and records.all_forgotten() == []
        records.add_forgotten([b"a", b"b"])
        records.add_forgotten([b"a"])  # again: no change
        assert records.forgotten([b"a", b"c", b"b"]) == {b"a", b"b"}
        assert sorted(records.all_forgotten()) == [b"a", b"b"]

    def test_a_setting_is_kept_unless_replaced(self, records):
        assert records.setting("x") is None
        assert records.put_setting("x", b"1") == b"1"
        assert records.put_setting("x", b"2") == b"1"
        assert records.put_setting("x", b"3", replace=True) == b"3"
        assert records.setting("x") == b"3"
        assert records.put_setting("new", b"4", replace=True) == b"4"

    def test_concurrent_settings_all_answer_the_one_kept(self, records):
        handles = [records, self.other_handle(records)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: handles[i % 2].put_setting("x", b"%d" % i), range(16)))
        assert answers == [records.setting("x")] * 16

    def test_rewrap_replaces_keys_and_leaves_deleted_rows_deleted(self, records):
        ana, ben = row("ana"), row("ben")
        records.claim([ana, ben])
        records.delete("ben")
        fresh = [ana._replace(wrapped=b"new a"), ben._replace(wrapped=b"new b")]
        records.rewrap(fresh)
        assert records.by_user(["ana", "ben"]) == {"ana": fresh[0]}
        assert records.by_subject([ana.subject, ben.subject]) == {ana.subject: fresh[0]}

    def test_rows_come_in_batches_covering_every_row(self, records):
        rows = [row(f"user{i:02}") for i in range(25)]
        records.claim(rows)
        batches = list(records.rows(batch=10))
        assert len(batches) >= 3 and all(0 < len(batch) <= 10 for batch in batches)
        found = [r for batch in batches for r in batch]
        assert sorted(found) == sorted(rows)

    # -- the keyring over the port ----------------------------------------------------------

    def test_subjects_are_made_once_and_stable_across_keyrings(self, records):
        first = Keyring(records, OLD)
        subjects = first.subjects(["ana", "ben", "ana"])
        assert sorted(subjects) == ["ana", "ben"] and len(set(subjects.values())) == 2
        second = Keyring(self.other_handle(records), OLD)
        assert second.subjects(["ben", "ana", "cy"]) == {**subjects, "cy": second.subjects(["cy"])["cy"]}
        assert first.subjects(["cy"]) == second.subjects(["cy"])
        assert opens(second, subjects, sealed(first, subjects))

    def test_a_forgotten_user_gets_no_new_subject(self, records):
        keyring = Keyring(records, OLD)
        subject = keyring.subjects(["ana", "ben"])["ana"]
        keyring.retire("ana")
        assert keyring.forget("ana") == subject
        assert keyring.subjects(["ana", "ben"]).keys() == {"ben"}
        other = Keyring(self.other_handle(records), OLD)
        assert other.subjects(["ana"]) == {} and other.forgotten_of(["ana", "ben"]) == {"ana"}
        other.load([subject])
        assert other.cipher(subject) is None and keyring.cipher(subject) is None
        assert records.by_user(["ana"]) == {}

    def test_a_wrong_master_key_is_refused(self, records):
        Keyring(records, OLD)
        with pytest.raises(WrongMasterKey):
            Keyring(records, NEW)

    def test_after_a_rotation_the_new_master_key_alone_opens_every_key(self, records):
        old = Keyring(records, OLD)
        subjects = old.subjects([f"user{i}" for i in range(30)])
        messages = sealed(old, subjects)
        old.retire("gone")
        assert Keyring(records, NEW, previous=(OLD,)).rotate() == 30
        assert Keyring(records, NEW, previous=(OLD,)).rotate() == 30  # again, as after a crash: the same
        new = Keyring(self.other_handle(records), NEW)
        assert new.subjects(list(subjects)) == subjects and opens(new, subjects, messages)
        assert new.forgotten_of(["gone"]) == {"gone"} and new.subjects(["gone"]) == {}
        with pytest.raises(WrongMasterKey):
            Keyring(records, OLD)

    def test_a_backup_restores_into_an_empty_store_and_leaves_out_forgotten_users(self, records, another, tmp_path):
        keyring = Keyring(records, OLD)
        subjects = keyring.subjects(["ana", "ben", "cy", "dee"])
        messages = sealed(keyring, subjects)
        keyring.retire("dee")  # forgotten while the backup was taken: its key is in it, and its digest
        assert keyring.backup(tmp_path / "keys.backup") == 4
        assert (tmp_path / "keys.backup").stat().st_mode & 0o777 == 0o600
        keyring.retire("ben")
        keyring.forget("ben")

        restored = Keyring(another, OLD)
        assert restored.restore(tmp_path / "keys.backup") == 3
        reopened = Keyring(self.other_handle(another), OLD)
        kept = {user: subjects[user] for user in ("ana", "ben", "cy")}
        assert reopened.subjects(["ana", "ben", "cy", "dee"]) == kept == restored.subjects(["ana", "ben", "cy", "dee"])
        assert opens(reopened, kept, {user: messages[user] for user in kept})
        assert reopened.forgotten_of(["dee", "ana"]) == {"dee"}

        # Restored where ben was forgotten after the backup: he stays forgotten, the others unchanged.
        assert keyring.restore(tmp_path / "keys.backup") == 0
        assert Keyring(records, OLD).subjects(["ana", "ben", "cy"]) == {"ana": subjects["ana"], "cy": subjects["cy"]}

    def test_a_backup_under_another_master_key_restores_nothing(self, records, another, tmp_path):
        Keyring(records, OLD).subjects(["ana"])
        Keyring(records, OLD).backup(tmp_path / "keys.backup")
        keyring = Keyring(another, NEW)
        with pytest.raises(WrongMasterKey):
            keyring.restore(tmp_path / "keys.backup")
        assert list(another.rows()) == [] and Keyring(another, NEW).subjects(["ana"])
