"""Archive compaction (archive/compaction.py) against an in-memory S3: which runs are closed, the
merged objects, and readers that never see a gap or a duplicate with the compactor stopped at each
step, or deleting while they read."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

from archive import compaction, segments
from archive.compaction import CompactionPolicy, Compactor
from archive.progress import ArchiveProgress
from archive.segments import (
    ArchiveError, SegmentGone, iter_segment, list_segments, plan_archive, put_segment, read_archive, segment_key,
)
from events.reader import LogRecord

TOPIC = "t"
DAY = 86_400.0


class MemoryS3:
    """Just enough of a boto3 S3 client for the archive: objects in a dict, listed in key order."""

    def __init__(self, clock):
        self.objects: dict[str, tuple[bytes, float, dict]] = {}  # key -> (body, written at, metadata)
        self.clock = clock
        self.deletes: list[str] = []
        self.on_get = lambda key: None  # tests delete objects between a listing and a read here

    def put_object(self, Bucket, Key, Body, Metadata=None, **_):
        self.objects[Key] = (Body if isinstance(Body, bytes) else Body.read(), self.clock(), dict(Metadata or {}))

    def get_object(self, Bucket, Key):
        self.on_get(Key)
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key][0])}

    def head_object(self, Bucket, Key):
        body, at, metadata = self.objects[Key]
        return {"Metadata": metadata, "LastModified": datetime.fromtimestamp(at, timezone.utc)}

    def delete_objects(self, Bucket, Delete):
        for item in Delete["Objects"]:
            self.objects.pop(item["Key"], None)
            self.deletes.append(item["Key"])
        return {}

    def list_objects_v2(self, Bucket, Prefix="", StartAfter="", MaxKeys=1000, Delimiter=None, ContinuationToken=None):
        after = ContinuationToken or StartAfter
        keys = sorted(k for k in self.objects if k.startswith(Prefix) and k > after)
        if Delimiter:
            folders = sorted({Prefix + k[len(Prefix):].split(Delimiter)[0] + Delimiter for k in keys
                              if Delimiter in k[len(Prefix):]})
            return {"CommonPrefixes": [{"Prefix": f} for f in folders]}
        page = keys[:MaxKeys]
        answer = {"Contents": [{"Key": k, "Size": len(self.objects[k][0]),
                                "LastModified": datetime.fromtimestamp(self.objects[k][1], timezone.utc)}
                               for k in page]}
        if len(keys) > MaxKeys:
            answer["NextContinuationToken"] = page[-1]
        return answer

    def get_paginator(self, name):
        client = self

        class Paginator:
            def paginate(self, **kwargs):
                token = None
                while True:
                    page = client.list_objects_v2(**kwargs, **({"ContinuationToken": token} if token else {}))
                    yield page
                    token = page.get("NextContinuationToken")
                    if not token:
                        return

        return Paginator()


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def s3(clock):
    return MemoryS3(clock)


def records(partition: int, first: int, last: int) -> list[LogRecord]:
    return [LogRecord(partition, o, f"u{o % 7}".encode(), b'{"n":%d}' % o) for o in range(first, last + 1)]


def write(s3, clock, partition: int, bounds: list[tuple[int, int]], every: float = 5.0) -> None:
    """Segments as the archiver writes them, `every` seconds apart."""
    for first, last in bounds:
        put_segment(s3, "b", TOPIC, records(partition, first, last), compresslevel=1)
        clock.now += every


def compactor(s3, clock, target: int = 1 << 30, age: float = DAY, **kwargs) -> Compactor:
    return Compactor(s3, "b", TOPIC, CompactionPolicy(target, age, 1), clock=clock, **kwargs)


def read_all(s3, log=None) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for batch in read_archive(s3, "b", TOPIC, log=log, prefetch=3, chunk=7):  # a merged object: several lists
        assert 0 < len(batch) <= 7 and {r.partition for r in batch} == {batch[0].partition}
        out.setdefault(batch[0].partition, []).extend(r.offset for r in batch)
    return out


def read_segment(s3, segment, chunk: int = 7) -> list[int]:
    lists = list(iter_segment(s3, "b", segment, chunk))
    assert all(0 < len(part) <= chunk for part in lists)
    return [r.offset for part in lists for r in part]


def planned(s3) -> dict[int, list[tuple[int, int]]]:
    return {chain[0].partition: [(s.first, s.last) for s in chain]
            for chain in plan_archive(list_segments(s3, "b", TOPIC), None)}


def each_offset_once(s3, ends: dict[int, int]) -> None:
    """read_archive and plan_archive give every offset once, from 0 to the end, strictly planned."""
    log = {p: range(0, end + 1) for p, end in ends.items()}
    assert read_all(s3, log) == {p: list(range(end + 1)) for p, end in ends.items()}
    for chain in plan_archive(list_segments(s3, "b", TOPIC), log):
        assert chain[0].first == 0 and chain[-1].last == ends[chain[0].partition]
        assert all(b.first == a.last + 1 for a, b in zip(chain, chain[1:])), chain
    for chain in plan_archive(list_segments(s3, "b", TOPIC), log):
        assert [o for s in chain for o in read_segment(s3, s)] == list(range(ends[chain[0].partition] + 1))


def bounds(count: int, size: int = 10, start: int = 0) -> list[tuple[int, int]]:
    return [(start + i * size, start + i * size + size - 1) for i in range(count)]


def test_a_day_old_run_is_merged_but_the_newest_segment_stays(s3, clock):
    write(s3, clock, 0, bounds(20))
    write(s3, clock, 1, bounds(3))
    assert compactor(s3, clock).compact()["merged"] == 0  # young: the run may still grow
    clock.now += DAY
    figures = compactor(s3, clock).compact()
    assert figures["merged"] == 2 and figures["segments_merged"] == 19 + 2
    assert figures["objects_before"] == 23 and figures["objects_after"] == 4 and figures["deleted"] == 21
    assert planned(s3) == {0: [(0, 189), (190, 199)], 1: [(0, 19), (20, 29)]}
    each_offset_once(s3, {0: 199, 1: 29})
    # The merged object is a segment like any other: same key scheme, same format, one line per offset.
    assert read_segment(s3, list_segments(s3, "b", TOPIC)[0][0]) == list(range(190))
    assert compactor(s3, clock).compact()["merged"] == 0  # nothing left to merge


def test_runs_are_cut_by_size_by_a_day_of_writes_and_at_holes(s3, clock):
    write(s3, clock, 0, bounds(10), every=DAY / 4)  # a day of trickle: 4 segments a day
    write(s3, clock, 0, bounds(3, start=200))  # a hole at 100..199 (the log had lost them)
    clock.now += DAY
    compactor(s3, clock).compact()
    # Days: [0..39] written from t to t+3/4 day, [40..79] the next day, [80..99] up to the hole.
    assert planned(s3) == {0: [(0, 39), (40, 79), (80, 99), (200, 219), (220, 229)]}
    assert compactor(s3, clock).compact()["merged"] == 0  # a closed run is not merged again
    clock.now += 10 * DAY
    assert compactor(s3, clock).compact()["merged"] == 0  # nor later: it remembers its day

    write(s3, clock, 1, bounds(12))
    size = next(iter(list_segments(s3, "b", TOPIC, [1])[1])).size
    compactor(s3, clock, target=4 * size).compact()  # young, but 4 segments make an object of the target size
    assert planned(s3)[1] == [(0, 39), (40, 79), (80, 89), (90, 99), (100, 109), (110, 119)]  # the rest: open


def test_overlapping_writers_and_leftovers_are_merged_once(s3, clock):
    write(s3, clock, 0, [(0, 9), (10, 19), (15, 29), (10, 14), (30, 39), (40, 49)])  # a rebalance's overlaps
    clock.now += DAY
    figures = compactor(s3, clock).compact()
    assert figures["deleted"] == 5 and planned(s3) == {0: [(0, 39), (40, 49)]}
    each_offset_once(s3, {0: 49})
    # A segment that only the union of two others covers is inside the merged object: deleted too.
    write(s3, clock, 1, [(0, 99), (50, 150), (100, 199), (200, 209)])
    clock.now += DAY
    figures = compactor(s3, clock).compact()
    assert figures["deleted"] == 3 and figures["objects_after"] == 4 == len(s3.objects)
    each_offset_once(s3, {0: 49, 1: 209})


class Stop(Exception):
    pass


@pytest.mark.parametrize("step,when", [("merged", 1), ("written", 1), ("deleted", 1), ("deleted", 2)])
def test_a_compactor_stopped_at_any_step_leaves_no_gap_or_duplicate(s3, clock, monkeypatch, step, when):
    monkeypatch.setattr(compaction, "DELETE_BATCH", 3)  # several delete requests per merged object
    write(s3, clock, 0, bounds(12))
    write(s3, clock, 1, bounds(5))
    clock.now += DAY
    seen = []

    def checkpoint(at, segment):
        if at == step:
            seen.append(segment)
            if len(seen) == when:
                raise Stop(at)

    with pytest.raises(Stop):
        compactor(s3, clock, checkpoint=checkpoint).compact()
    each_offset_once(s3, {0: 119, 1: 49})
    assert ArchiveProgress(s3, "b", TOPIC).archived() == {0: 119, 1: 49}
    compactor(s3, clock).compact()  # the next pass finishes the job
    assert planned(s3) == {0: [(0, 109), (110, 119)], 1: [(0, 39), (40, 49)]}
    assert len(s3.objects) == 4
    each_offset_once(s3, {0: 119, 1: 49})


def test_two_compactors_at_once_leave_each_offset_once(s3, clock):
    write(s3, clock, 0, bounds(30))
    clock.now += DAY
    late = compactor(s3, clock)
    plan = late.plan()  # listed, then another compactor (the CLI beside the archiver) does it all
    compactor(s3, clock).compact()
    with pytest.raises(SegmentGone, match="is gone"):
        late.run(plan)
    each_offset_once(s3, {0: 299})
    assert late.compact()["merged"] == 0 and len(s3.objects) == 2


@pytest.mark.parametrize("ahead", [segments.FETCH_AHEAD, 0])  # small objects fetched ahead; big ones streamed
def test_readers_that_listed_before_the_deletes_read_on(s3, clock, monkeypatch, ahead):
    monkeypatch.setattr(segments, "FETCH_AHEAD", ahead)
    write(s3, clock, 0, bounds(30))
    write(s3, clock, 1, bounds(30))
    clock.now += DAY
    done = []

    def compact_once(key):  # the first read starts a whole compaction, deletes included
        s3.on_get = lambda key: None
        done.append(compactor(s3, clock).compact())

    s3.on_get = compact_once
    assert read_all(s3, {0: range(300), 1: range(300)}) == {0: list(range(300)), 1: list(range(300))}
    assert done[0]["deleted"] == 58
    # iter_segment on a planned segment that is gone streams it from its cover, in bounded lists.
    write(s3, clock, 2, bounds(5))
    chain = list_segments(s3, "b", TOPIC, [2])[2]
    clock.now += DAY
    compactor(s3, clock).compact()
    assert planned(s3)[2] == [(0, 39), (40, 49)]
    assert [o for s in chain for o in read_segment(s3, s, chunk=3)] == list(range(50))
    assert [len(part) for part in iter_segment(s3, "b", chain[1], 4)] == [4, 4, 2]
    # Gone with no cover: an error, not a gap.
    s3.delete_objects("b", {"Objects": [{"Key": segment_key(TOPIC, 2, 0, 39)}]})
    with pytest.raises(ArchiveError, match="no object covers it"):
        list(iter_segment(s3, "b", chain[1]))


def test_the_archives_end_is_found_the_same_before_during_and_after_compaction(s3, clock):
    write(s3, clock, 0, bounds(30))
    progress = ArchiveProgress(s3, "b", TOPIC)  # remembers where it listed
    assert progress.archived() == {0: 299} == ArchiveProgress(s3, "b", TOPIC).archived()
    clock.now += DAY
    with pytest.raises(Stop):
        compactor(s3, clock, checkpoint=lambda at, s: (_ for _ in ()).throw(Stop()) if at == "written" else None
                  ).compact()
    assert progress.archived() == {0: 299} == ArchiveProgress(s3, "b", TOPIC).archived()
    compactor(s3, clock).compact()
    write(s3, clock, 0, [(300, 309)])
    assert progress.archived() == {0: 309} == ArchiveProgress(s3, "b", TOPIC).archived()
    assert ArchiveProgress(s3, "b", TOPIC).archived([0, 3]) == {0: 309, 3: -1}
    assert segment_key(TOPIC, 0, 0, 289) in s3.objects
