import asyncio
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from commands.handlers import IdempotencyConflict, InvalidCommand, ReviewCommands
from commands.types import RetractReview, SubmitReview
from events.types import ReviewRetracted, ReviewSubmitted
from tests.unit.fakes import MemoryLog

NOW = datetime(2025, 3, 1, tzinfo=timezone.utc)


def handlers(log=None):
    log = log or MemoryLog()
    return log, ReviewCommands(log, clock=lambda: NOW)


def test_submit_appends_one_review_event_with_envelope():
    log, commands = handlers()
    receipt = asyncio.run(commands.submit(SubmitReview("ana", "m1", 4.0, summary="good")))
    [event] = log.events
    assert isinstance(event, ReviewSubmitted)
    assert (event.user_id, event.movie_id, event.rating, event.summary) == ("ana", "m1", 4.0, "good")
    assert event.event_id == receipt.event_id and event.recorded_at == NOW == event.reviewed_at
    assert receipt.token == receipt.position.token()


def test_retract_appends_a_retraction():
    log, commands = handlers()
    asyncio.run(commands.retract(RetractReview("ana", "m1")))
    assert isinstance(log.events[0], ReviewRetracted)


@pytest.mark.parametrize("body", [
    {"user_id": "", "movie_id": "m", "rating": 3},
    {"user_id": "u" * 129, "movie_id": "m", "rating": 3},
    {"user_id": "u", "movie_id": "m", "rating": 0},
    {"user_id": "u", "movie_id": "m", "rating": 5.5},
    {"user_id": "u", "movie_id": "m", "rating": 2.25},
    {"user_id": "u", "movie_id": "m", "rating": 3, "summary": "s" * 301},
    {"user_id": "u", "movie_id": "m", "rating": 3, "text": "t" * 20_001},
    {"user_id": "u", "movie_id": "m", "rating": 3, "reviewed_at": "2020-01-01T00:00:00"},
])
def test_command_type_rejects_invalid_fields(body):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, SubmitReview)


@pytest.mark.parametrize("when", [NOW + timedelta(days=2), datetime(1850, 1, 1, tzinfo=timezone.utc)])
def test_insane_review_times_are_refused(when):
    log, commands = handlers()
    with pytest.raises(InvalidCommand):
        asyncio.run(commands.submit(SubmitReview("u", "m", 3.0, reviewed_at=when)))
    assert log.events == []


def test_idempotency_key_gives_one_event_and_the_same_receipt():
    log, commands = handlers()

    async def three_times():
        command = SubmitReview("ana", "m1", 4.0)
        return [await commands.submit(command, "key-1") for _ in range(3)]

    receipts = asyncio.run(three_times())
    assert len(log.events) == 1
    assert len(set(receipts)) == 1


def test_idempotency_key_gives_a_deterministic_event_id_across_processes():
    log1, first = handlers()
    log2, second = handlers()
    asyncio.run(first.submit(SubmitReview("ana", "m1", 4.0), "key-1"))
    asyncio.run(second.submit(SubmitReview("ana", "m1", 4.0), "key-1"))
    assert log1.events[0].event_id == log2.events[0].event_id
    asyncio.run(second.submit(SubmitReview("ben", "m1", 4.0), "key-1"))
    assert len({e.event_id for e in log2.events}) == 2, "keys are scoped per user"


def test_reused_key_with_another_body_is_a_conflict():
    log, commands = handlers()

    async def run():
        await commands.submit(SubmitReview("ana", "m1", 4.0), "k")
        await commands.submit(SubmitReview("ana", "m1", 1.0), "k")

    with pytest.raises(IdempotencyConflict):
        asyncio.run(run())
    assert len(log.events) == 1


def test_a_failed_append_can_be_retried_with_the_same_key():
    log, commands = handlers()
    log.down = True

    async def run():
        with pytest.raises(Exception):
            await commands.submit(SubmitReview("ana", "m1", 4.0), "k")
        log.down = False
        return await commands.submit(SubmitReview("ana", "m1", 4.0), "k")

    receipt = asyncio.run(run())
    assert [e.event_id for e in log.events] == [receipt.event_id]


def restarted_api(log, store, clock=lambda: NOW):
    """Command handlers with nothing in memory (a new API process) that find applied events in the store."""
    from api.reviews import recorded_in

    return ReviewCommands(log, recorded_in(store), clock=clock)


def test_a_retry_after_a_restart_answers_the_first_receipt_without_appending(tmp_path):
    from projections.sqlite_store import SQLiteStore
    from tests.unit.test_api import project

    log, store = MemoryLog(), SQLiteStore(tmp_path / "p.db")
    first = asyncio.run(restarted_api(log, store).submit(SubmitReview("ana", "m", 4.0), "key-1"))
    project(log, store)
    again = asyncio.run(restarted_api(log, store).submit(SubmitReview("ana", "m", 4.0), "key-1"))
    assert again == first and len(log.events) == 1
    with pytest.raises(IdempotencyConflict):
        asyncio.run(restarted_api(log, store).submit(SubmitReview("ana", "m", 2.0), "key-1"))
    # Scoped per user and per kind of command: the same key elsewhere is another request.
    asyncio.run(restarted_api(log, store).submit(SubmitReview("ben", "m", 2.0), "key-1"))
    asyncio.run(restarted_api(log, store).retract(RetractReview("ana", "m"), "key-1"))
    assert len(log.events) == 3
    store.close()


def test_a_key_expires_after_its_lifetime_and_then_makes_a_new_event(tmp_path):
    from commands.handlers import KEY_LIFETIME
    from projections.sqlite_store import SQLiteStore
    from tests.unit.test_api import project

    log, store = MemoryLog(), SQLiteStore(tmp_path / "p.db")
    first = asyncio.run(restarted_api(log, store).submit(SubmitReview("ana", "m", 4.0), "k"))
    project(log, store)
    later = NOW + KEY_LIFETIME + timedelta(seconds=1)
    second = asyncio.run(restarted_api(log, store, clock=lambda: later).submit(SubmitReview("ana", "m", 2.0), "k"))
    assert second.event_id != first.event_id and len(log.events) == 2
    project(log, store)
    # A retry of the second use finds it, after another restart, by following the key's uses.
    again = asyncio.run(restarted_api(log, store, clock=lambda: later).submit(SubmitReview("ana", "m", 2.0), "k"))
    assert again == second and len(log.events) == 2
    store.close()


def test_concurrent_retries_in_one_process_append_once_while_the_projection_is_asked(tmp_path):
    from projections.sqlite_store import SQLiteStore

    log, store = MemoryLog(), SQLiteStore(tmp_path / "p.db")
    commands = restarted_api(log, store)

    async def both():
        return await asyncio.gather(*(commands.submit(SubmitReview("ana", "m", 4.0), "k") for _ in range(2)))

    first, second = asyncio.run(both())
    assert first == second and len(log.events) == 1
    store.close()


def test_a_conflicting_request_after_a_restart_leaves_the_key_to_the_first(tmp_path):
    from projections.sqlite_store import SQLiteStore
    from tests.unit.test_api import project

    log, store = MemoryLog(), SQLiteStore(tmp_path / "p.db")
    first = asyncio.run(restarted_api(log, store).submit(SubmitReview("ana", "m", 4.0), "k"))
    project(log, store)
    commands = restarted_api(log, store)

    async def conflict_then_retry():
        with pytest.raises(IdempotencyConflict):
            await commands.submit(SubmitReview("ana", "m", 1.0), "k")
        return await commands.submit(SubmitReview("ana", "m", 4.0), "k")

    assert asyncio.run(conflict_then_retry()) == first and len(log.events) == 1
    store.close()


def test_a_retry_spelling_the_same_instant_at_another_offset_is_the_same_request(tmp_path):
    from projections.sqlite_store import SQLiteStore
    from tests.unit.test_api import project

    def review(moment: str) -> SubmitReview:
        return msgspec.json.decode(f'{{"user_id": "ana", "movie_id": "m", "rating": 4, "reviewed_at": "{moment}"}}',
                                   type=SubmitReview)

    (log, commands), store = handlers(), SQLiteStore(tmp_path / "p.db")
    first = asyncio.run(commands.submit(review("2024-05-01T12:00:00+02:00"), "k"))
    assert asyncio.run(commands.submit(review("2024-05-01T10:00:00Z"), "k")) == first  # from memory
    project(log, store)
    again = asyncio.run(restarted_api(log, store).submit(review("2024-05-01T11:00:00+01:00"), "k"))
    assert again == first and len(log.events) == 1  # from the projection
    store.close()


class SubmitReviewWithMood(SubmitReview, frozen=True, forbid_unknown_fields=True):
    """SubmitReview as a later release might have it: a new field, with a default."""

    mood: str = ""


def test_a_retry_after_the_command_gains_a_field_with_a_default_is_the_same_request(tmp_path):
    from projections.sqlite_store import SQLiteStore
    from tests.unit.test_api import project

    log, store = MemoryLog(), SQLiteStore(tmp_path / "p.db")
    first = asyncio.run(restarted_api(log, store).submit(SubmitReview("ana", "m", 4.0, summary="Good"), "k"))
    project(log, store)
    again = asyncio.run(restarted_api(log, store).submit(SubmitReviewWithMood("ana", "m", 4.0, summary="Good"), "k"))
    assert again == first and len(log.events) == 1
    with pytest.raises(IdempotencyConflict):
        asyncio.run(restarted_api(log, store).submit(SubmitReviewWithMood("ana", "m", 4.0, "Good", mood="x"), "k"))
    store.close()


def test_a_retry_of_a_request_whose_event_has_the_digest_of_the_release_before_gets_its_first_answer(tmp_path):
    import hashlib

    from projections.sqlite_store import SQLiteStore
    from tests.unit.test_api import project

    command = SubmitReview("ana", "m", 4.0, reviewed_at=datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    log, store = MemoryLog(), SQLiteStore(tmp_path / "p.db")
    first = asyncio.run(restarted_api(log, store).submit(command, "k"))
    log.partitions = [[msgspec.structs.replace(e, request_digest=hashlib.sha256(repr(command).encode()).hexdigest())
                       for e in p] for p in log.partitions]  # as the release before wrote it
    project(log, store)
    assert asyncio.run(restarted_api(log, store).submit(command, "k")) == first and len(log.events) == 1
    with pytest.raises(IdempotencyConflict):
        asyncio.run(restarted_api(log, store).submit(SubmitReview("ana", "m", 2.0), "k"))
    store.close()
