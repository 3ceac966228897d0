"""The S3 archiver (`harmony archiver`) against the real stack: the archive holds exactly the log.

Every test archives its own topic into the stack's one archive bucket: keys start with the topic,
so tests do not see each other's segments. (Each SeaweedFS bucket is a collection that reserves
volumes of its own; a bucket per test would exhaust the local server's volume slots.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from archive.progress import ArchiveProgress
from archive.segments import ensure_bucket, list_segments, read_archive, s3_client
from events.reader import read_log
from tests.conftest import PARTITIONS, Service, wait_until
from tests.integration.helpers import produce, produce_events, review_stream

pytestmark = pytest.mark.integration

TOTAL = 30_000


@pytest.fixture
def archive(env, settings, tmp_path):
    """Answers (s3 client, bucket, start) where start(**variables) runs `harmony archiver` on this
    test's topic with extra environment variables."""
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    bucket = settings.s3_bucket
    ensure_bucket(s3, bucket)  # the archiver creates it too; polling it may start first
    started: list[Service] = []

    def start(**variables: str) -> Service:
        child_env = {**env, **variables}
        service = Service(["archiver"], child_env, tmp_path / f"archiver.{len(started)}.log").start()
        started.append(service)
        return service

    yield s3, bucket, start
    for service in started:
        service.stop()


def log_records(settings) -> dict[int, list]:
    async def read() -> dict[int, list]:
        out: dict[int, list] = {}
        async for batch in read_log(settings.kafka_bootstrap, settings.topic):
            for record in batch:
                out.setdefault(record.partition, []).append(record)
        return out

    return asyncio.run(read())


def archived_records(s3, bucket, topic) -> dict[int, list]:
    out: dict[int, list] = {}
    for batch in read_archive(s3, bucket, topic):
        out.setdefault(batch[0].partition, []).extend(batch)
    return out


def archived_count(s3, bucket, topic) -> int:
    return sum(last + 1 for last in ArchiveProgress(s3, bucket, topic).archived().values())


def assert_archive_is_the_log(s3, bucket, settings) -> None:
    """Same offsets, keys and values per partition; the segments an exact chain from offset 0."""
    in_log = log_records(settings)
    segments = list_segments(s3, bucket, settings.topic)
    for partition, records in in_log.items():
        chain = segments.get(partition, [])
        assert chain and chain[0].first == 0, f"partition {partition}: the archive does not start at 0"
        for before, after in zip(chain, chain[1:]):
            assert after.first == before.last + 1, f"partition {partition}: {before.key} then {after.key}"
        assert chain[-1].last == records[-1].offset
    assert archived_records(s3, bucket, settings.topic) == in_log


def test_sigkill_mid_stream_then_restart_archives_exactly_the_log(settings, archive):
    s3, bucket, start = archive
    events = review_stream(TOTAL, seed=7)
    small = {"HARMONY_ARCHIVE_SEGMENT_RECORDS": "2000", "HARMONY_ARCHIVE_SEGMENT_AGE": "1"}
    # The first half is in the log already; the rest keeps arriving while the archiver is killed.
    produce_events(settings.kafka_bootstrap, settings.topic, events[: TOTAL // 2])
    first = start(**small)
    wait_until(lambda: archived_count(s3, bucket, settings.topic) > 3000, 90,
               f"archiver made no progress: {first.log()[-2000:]}", 0.05)
    late = threading.Thread(target=produce_events,
                            args=(settings.kafka_bootstrap, settings.topic, events[TOTAL // 2:]))
    late.start()
    time.sleep(0.3)
    first.kill()
    at_kill = archived_count(s3, bucket, settings.topic)
    late.join()
    assert at_kill < TOTAL, "the archiver finished before it was killed: make the stream longer"

    second = start(**small)
    wait_until(lambda: archived_count(s3, bucket, settings.topic) == TOTAL, 120,
               f"restarted archiver reached the log end: {second.log()[-2000:]}", 0.2)
    time.sleep(3)  # nothing more may come (no late duplicate segment)
    assert archived_count(s3, bucket, settings.topic) == TOTAL
    assert_archive_is_the_log(s3, bucket, settings)
    assert '"segment written"' in second.log()


def test_malformed_records_are_archived_as_they_are(settings, archive):
    s3, bucket, start = archive
    good = review_stream(50, seed=3)
    odd = [
        (b"u1", b"not json at all"),
        (b"u1", b'{"truncated": '),
        (b"u1", b""),
        (None, b'{"type": "Unknown", "no": "key"}'),
        (b"\xff\xfe", b'{"key": "not utf-8"}'),
        (b"u1", b'{"latin-1": "\xe9"}'),
        (b"u1", b'{"pretty":\n  true}'),
        (b"u1", b"\x00\x01binary"),
        (b"u1", None),  # a tombstone
    ]
    from events.codec import encode

    records = [(e.key.encode(), encode(e)) for e in good[:25]] + odd + [(e.key.encode(), encode(e)) for e in good[25:]]
    asyncio.run(produce(settings.kafka_bootstrap, settings.topic, records))
    service = start(HARMONY_ARCHIVE_SEGMENT_AGE="1")
    wait_until(lambda: archived_count(s3, bucket, settings.topic) == len(records), 90,
               f"archiver reached the log end: {service.log()[-2000:]}", 0.2)
    assert_archive_is_the_log(s3, bucket, settings)
    archived = [r for records_ in archived_records(s3, bucket, settings.topic).values() for r in records_]
    assert {(r.key, r.value) for r in archived} >= set(odd)


def test_group_offsets_ahead_of_the_archive_do_not_leave_a_gap(settings, archive):
    """Faust's committed offsets say 'done'; an archive that lacks the records must still get them all."""
    s3, bucket, start = archive
    events = review_stream(3000, seed=11)
    produce_events(settings.kafka_bootstrap, settings.topic, events)
    first = start(HARMONY_ARCHIVE_SEGMENT_AGE="1")
    wait_until(lambda: archived_count(s3, bucket, settings.topic) == len(events), 90, "first archiver done")
    time.sleep(2.5)  # Faust commits its group offsets (every second)
    first.stop()
    # The archive is lost (or new); the consumer group remembers everything as done.
    keys = [s.key for segments in list_segments(s3, bucket, settings.topic).values() for s in segments]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys]})
    assert archived_count(s3, bucket, settings.topic) == 0

    second = start(HARMONY_ARCHIVE_SEGMENT_AGE="1")
    wait_until(lambda: archived_count(s3, bucket, settings.topic) == len(events), 90,
               f"second archiver filled the archive again: {second.log()[-2000:]}", 0.2)
    assert_archive_is_the_log(s3, bucket, settings)


def test_sigterm_writes_what_is_buffered(settings, archive):
    s3, bucket, start = archive
    events = review_stream(2000, seed=13)
    produce_events(settings.kafka_bootstrap, settings.topic, events)
    # Segments would wait ten minutes: only the shutdown writes them.
    service = start(HARMONY_ARCHIVE_SEGMENT_AGE="600")

    def buffered_all() -> bool:
        for line in service.log().splitlines():
            start_at = line.find("{")
            if start_at >= 0 and '"archiver lag"' in line:
                entry = json.loads(line[start_at:])
                if sum(entry["buffered"].values()) == len(events):
                    return True
        return False

    wait_until(buffered_all, 90, f"archiver buffered every event: {service.log()[-2000:]}", 0.2)
    assert archived_count(s3, bucket, settings.topic) == 0
    service.stop()
    assert service.process.returncode == 0, service.log()[-2000:]
    assert archived_count(s3, bucket, settings.topic) == len(events)
    assert_archive_is_the_log(s3, bucket, settings)
    assert PARTITIONS == len(list_segments(s3, bucket, settings.topic))
