"""Archive compaction against the stack's real SeaweedFS, on segments the real archiver wrote: the
compactor stopped at each step, a reader reading while segments are deleted, `harmony archive
compact`, the archiver compacting in the background, and `verify` / `rebuild --from-archive` on
the compacted archive."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from archive import compaction
from archive.compaction import CompactionPolicy, Compactor
from archive.progress import ArchiveProgress
from archive.segments import ensure_bucket, iter_segment, list_segments, plan_archive, read_archive, s3_client
from events.reader import log_offsets
from tests.conftest import wait_until
from tests.integration.helpers import applied, produce_events, review_stream
from tests.integration.test_archiver import log_records
from tests.integration.test_rebuild_verify import harmony

pytestmark = pytest.mark.integration

EVENTS = 6_000
DAY = 86_400.0


class Stop(Exception):
    pass


@pytest.fixture
def archived(settings, env, services):
    """EVENTS events in the log and archived in segments of 50 records by `harmony archiver` (stopped
    after, no compaction of its own): (s3 client, the log's offsets per partition)."""
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(s3, settings.s3_bucket)
    produce_events(settings.kafka_bootstrap, settings.topic, review_stream(EVENTS, seed=41, catalogue=0.05))
    env.update(HARMONY_ARCHIVE_SEGMENT_RECORDS="50", HARMONY_ARCHIVE_COMPACT_INTERVAL="0")
    archiver = services("archiver")
    progress = ArchiveProgress(s3, settings.s3_bucket, settings.topic)
    wait_until(lambda: sum(o + 1 for o in progress.archived().values()) == EVENTS, 120,
               f"archiver reached the log end: {archiver.log()[-1500:]}")
    archiver.stop()
    return s3, asyncio.run(log_offsets(settings.kafka_bootstrap, settings.topic))


def each_offset_once(s3, settings, offsets: dict[int, range], in_log: dict[int, list]) -> None:
    """read_archive and a strict plan_archive + iter_segment give the log's records, each offset once."""
    read: dict[int, list] = {}
    for batch in read_archive(s3, settings.s3_bucket, settings.topic, log=offsets):
        read.setdefault(batch[0].partition, []).extend(batch)
    assert read == in_log
    for chain in plan_archive(list_segments(s3, settings.s3_bucket, settings.topic), offsets):
        assert [r for s in chain for part in iter_segment(s3, settings.s3_bucket, s) for r in part] == \
            in_log[chain[0].partition]
    assert ArchiveProgress(s3, settings.s3_bucket, settings.topic).archived() == {
        p: r.stop - 1 for p, r in offsets.items()}


def objects(s3, settings) -> int:
    return sum(map(len, list_segments(s3, settings.s3_bucket, settings.topic).values()))


def later() -> float:
    """A clock two days ahead: every run is a day old, so closed."""
    return time.time() + 2 * DAY


def test_a_compactor_stopped_at_each_step_leaves_each_offset_once(settings, archived, monkeypatch):
    s3, offsets = archived
    in_log = log_records(settings)
    before = objects(s3, settings)
    monkeypatch.setattr(compaction, "DELETE_BATCH", 4)  # several delete requests per merged object
    size = max(s.size for chain in list_segments(s3, settings.s3_bucket, settings.topic).values() for s in chain)
    policy = CompactionPolicy(target_bytes=8 * size, age=DAY, gzip_level=3)  # several runs per partition
    for step, when in [("merged", 2), ("written", 3), ("deleted", 2), ("deleted", 7)]:
        seen = []

        def checkpoint(at, segment):
            if at == step:
                seen.append(segment)
                if len(seen) == when:
                    raise Stop(f"{step} {segment.key}")

        with pytest.raises(Stop):
            Compactor(s3, settings.s3_bucket, settings.topic, policy, checkpoint=checkpoint, clock=later).compact()
        each_offset_once(s3, settings, offsets, in_log)

    figures = Compactor(s3, settings.s3_bucket, settings.topic, policy, clock=later).compact()
    each_offset_once(s3, settings, offsets, in_log)
    chains = list_segments(s3, settings.s3_bucket, settings.topic)
    for chain in chains.values():  # an exact chain: nothing covered is left
        assert all(b.first == a.last + 1 for a, b in zip(chain, chain[1:]))
    assert figures["objects_after"] == objects(s3, settings) < before / 4


def test_a_reader_reading_while_compaction_deletes_reads_each_offset_once(settings, archived):
    s3, offsets = archived
    in_log = log_records(settings)
    planned = plan_archive(list_segments(s3, settings.s3_bucket, settings.topic), offsets)
    reading = read_archive(s3, settings.s3_bucket, settings.topic, log=offsets, prefetch=2)
    first = next(reading)  # listed and planned; two segments fetched ahead
    policy = CompactionPolicy(target_bytes=1 << 30, age=DAY, gzip_level=3)
    figures = Compactor(s3, settings.s3_bucket, settings.topic, policy, clock=later).compact()
    assert figures["deleted"] > 0 and objects(s3, settings) == 2 * len(offsets)
    read: dict[int, list] = {first[0].partition: first}
    for batch in reading:
        read.setdefault(batch[0].partition, []).extend(batch)
    assert read == in_log
    # Segments planned before the compaction, read after it: from their cover.
    assert [r for s in planned[0] for part in iter_segment(s3, settings.s3_bucket, s) for r in part] == \
        in_log[planned[0][0].partition]


def test_harmony_archive_compact_then_verify_and_rebuild_from_the_archive(settings, env, services, live_store,
                                                                             archived):
    s3, offsets = archived
    services("worker")
    wait_until(lambda: applied(live_store) == EVENTS, 120, "worker caught up")
    live = live_store.contents()
    before = objects(s3, settings)
    env["HARMONY_ARCHIVE_COMPACT_AGE"] = "1"  # runs of a second of writes, closed a second later
    time.sleep(1.5)
    started = time.monotonic()
    compacted = harmony(env, "archive", "compact", "--json")
    assert compacted.returncode == 0, compacted.stderr
    figures = json.loads(compacted.stdout)
    print(f"harmony archive compact: {figures} ({time.monotonic() - started:.1f} s with the process start)")
    assert figures["objects_before"] == before and figures["objects_after"] == objects(s3, settings) < before
    assert figures["merged"] > 0

    checked = harmony(env, "verify", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["archive"]["archived"] == report["archive"]["records"] == EVENTS
    rebuilt = harmony(env, "rebuild", "all", "--from-archive", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["from_archive"] == EVENTS
    assert live_store.contents() == live


def test_the_archiver_compacts_in_the_background(settings, env, services):
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(s3, settings.s3_bucket)
    env.update(HARMONY_ARCHIVE_SEGMENT_RECORDS="20", HARMONY_ARCHIVE_COMPACT_INTERVAL="1",
               HARMONY_ARCHIVE_COMPACT_BYTES="20000")
    archiver = services("archiver")
    events = review_stream(4_000, seed=43)
    for start in range(0, len(events), 500):  # a trickle: the archiver writes and compacts meanwhile
        produce_events(settings.kafka_bootstrap, settings.topic, events[start:start + 500])
        time.sleep(0.3)
    progress = ArchiveProgress(s3, settings.s3_bucket, settings.topic)
    wait_until(lambda: sum(o + 1 for o in progress.archived().values()) == len(events), 120,
               f"archiver reached the log end: {archiver.log()[-1500:]}")
    wait_until(lambda: "compaction pass" in archiver.log(), 60,
               f"a compaction pass: {archiver.log()[-1500:]}")
    offsets = asyncio.run(log_offsets(settings.kafka_bootstrap, settings.topic))
    each_offset_once(s3, settings, offsets, log_records(settings))
    assert objects(s3, settings) < len(events) / 20
