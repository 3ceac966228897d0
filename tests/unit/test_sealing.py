"""Sealed events: a user's events are opened only with their key, and not at all once it is gone."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from events.codec import DecodeError, Sealer, decode, decode_sealed, encode
from events.reader import LogRecord
from events.sealing import Forgotten, Unreadable
from events.types import MovieCatalogued, ReviewSubmitted, SubjectForgotten
from keys.keyring import Keyring
from keys.sqlite_keys import SQLiteKeys
from projections.projector import decode_batch

NOW = datetime(2026, 12, 6, tzinfo=timezone.utc)


def review(event_id: str, user: str = "ana-distinct", movie: str = "m1") -> ReviewSubmitted:
    return ReviewSubmitted(event_id=event_id, occurred_at=NOW, recorded_at=NOW, user_id=user, movie_id=movie,
                           rating=4.5, summary="Zyzzyva summary", text="a text nobody else wrote", reviewed_at=NOW)


@pytest.fixture
def keys(tmp_path) -> Keyring:
    return Keyring(SQLiteKeys(tmp_path / "keys.db"), bytes(32))


def another_process(tmp_path) -> Keyring:
    return Keyring(SQLiteKeys(tmp_path / "keys.db"), bytes(32))


def sealed(keys: Keyring, *events) -> list[tuple[bytes, bytes]]:
    return asyncio.run(Sealer(keys).records(events))


def test_a_personal_event_is_sealed_under_its_subject_and_opens_back(keys, tmp_path):
    event = review("e1")
    [(key, value)] = sealed(keys, event)
    subject = keys.known_subject("ana-distinct")
    assert key == subject.encode() and subject != "ana-distinct"
    # Strings long enough that random base64 never holds them by chance (a movie id "m1" might).
    for clear in (b"ana-distinct", b"Zyzzyva", b"nobody else", b"ReviewSubmitted", b"reviewed_at"):
        assert clear not in value
    reader = another_process(tmp_path)
    reader.load([subject])
    assert decode_sealed(value, reader) == (event, subject)


def test_a_users_events_share_one_subject_and_each_user_has_their_own(keys):
    records = sealed(keys, review("e1"), review("e2", movie="m2"), review("e3", user="ben"))
    assert records[0][0] == records[1][0] != records[2][0]
    assert records[0][1] != records[1][1]  # a nonce of its own each


def test_events_about_no_one_stay_clear(keys):
    movie = MovieCatalogued(event_id="c", occurred_at=NOW, recorded_at=NOW, movie_id="m1", title="Heat")
    assert sealed(keys, movie) == [(b"movie:m1", encode(movie))]


def test_a_clear_event_from_before_sealing_still_decodes(keys):
    assert decode_sealed(encode(review("e1")), keys) == (review("e1"), None)


def test_once_forgotten_no_process_opens_or_writes_the_users_events(keys, tmp_path):
    [(key, value)] = sealed(keys, review("e1"))
    subject = key.decode()
    keys.retire("ana-distinct")
    assert keys.forget("ana-distinct") == subject
    other = another_process(tmp_path)
    other.load([subject])
    for process in (keys, other):
        with pytest.raises(Unreadable):
            decode(value, process)
        with pytest.raises(Forgotten):
            sealed(process, review("e2"))
    assert other.forgotten_of(["ana-distinct", "ben"]) == {"ana-distinct"}


def test_a_record_that_does_not_open_with_its_subjects_key_is_a_dead_letter(keys):
    [(key, value)], [(bens, _)] = sealed(keys, review("e1")), sealed(keys, review("e2", user="ben"))
    swapped = value.replace(key, bens)  # ana's sealed bytes under ben's subject
    with pytest.raises(DecodeError, match="does not open"):
        decode(swapped, keys)


def test_a_batch_skips_and_counts_unreadable_records_and_a_forgetting_closes_its_subject_at_once(keys, tmp_path):
    (key, first), (_, second) = sealed(keys, review("e1"), review("e2", movie="m2"))
    subject = key.decode()
    forgetting = SubjectForgotten(event_id="f", occurred_at=NOW, recorded_at=NOW, subject=subject)
    [(_, late)] = sealed(keys, review("e3", movie="m3"))  # written by a process that had the key still
    raw = [LogRecord(0, n, key, value) for n, value in enumerate((first, second, encode(forgetting), late))]
    reader = another_process(tmp_path)
    decoded = decode_batch(raw, reader)
    assert [r.event.event_id if r.event else None for r in decoded.records] == ["e1", "e2", "f", None]
    assert [r.subject for r in decoded.records[:2]] == [subject, subject]
    assert decoded.unreadable == 1 and decoded.dead == []


def test_writers_of_new_users_at_once_share_one_key_store_lookup(keys):
    lookups = []

    class Counted:
        """The real keyring, counting its key-store lookups."""

        def __getattr__(self, name):
            return getattr(keys, name)

        def subjects(self, user_ids):
            lookups.append(len(user_ids))
            return keys.subjects(user_ids)

    sealer = Sealer(Counted())

    async def writers():
        return await asyncio.gather(*(sealer.records([review(f"e{n}", user=f"user-{n}")]) for n in range(40)))

    written = asyncio.run(writers())
    assert {records[0][0] for records in written} == {keys.known_subject(f"user-{n}").encode() for n in range(40)}
    assert sum(lookups) == 40 and len(lookups) < 40
