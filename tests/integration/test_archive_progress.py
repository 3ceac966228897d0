"""The archive's progress (`archive.progress.ArchiveProgress`) against the stack's real S3: it answers what
listing every segment answers, and after its first read asks S3 once per partition."""

from __future__ import annotations

import pytest

from archive.progress import ArchiveProgress
from archive.segments import ensure_bucket, put_segment, s3_client
from events.reader import LogRecord

pytestmark = pytest.mark.integration


@pytest.fixture
def archive(settings):
    """(s3 client, bucket, topic, put(partition, first, last), listings()): put writes a segment
    named for offsets first..last; listings counts the ListObjectsV2 requests made so far."""
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(s3, settings.s3_bucket)
    listings = []
    s3.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: listings.append(1))

    def put(partition: int, first: int, last: int) -> None:
        records = [LogRecord(partition, offset, b"k", b"{}") for offset in sorted({first, last})]
        put_segment(s3, settings.s3_bucket, settings.topic, records, compresslevel=1)

    return s3, settings.s3_bucket, settings.topic, put, lambda: len(listings)


def test_the_last_archived_offsets_are_those_a_full_listing_finds(archive):
    s3, bucket, topic, put, _ = archive
    progress = ArchiveProgress(s3, bucket, topic)
    assert progress.archived() == {}
    for first, last in [(0, 9), (10, 19), (20, 1_000_000_006)]:
        put(0, first, last)
    put(2, 5, 7)
    put(2, 5, 9)  # writers overlapped: the same first offset, a longer segment
    assert progress.archived() == ArchiveProgress(s3, bucket, topic).archived() == {0: 1_000_000_006, 2: 9}
    assert progress.archived([2, 5]) == {2: 9, 5: -1}


def test_after_the_first_read_only_new_segments_are_listed(archive):
    s3, bucket, topic, put, listings = archive
    progress = ArchiveProgress(s3, bucket, topic)
    for first in range(0, 3000, 10):  # three pages of a full listing
        put(0, first, first + 9)
    put(1, 0, 4)
    before = listings()
    assert progress.archived() == {0: 2999, 1: 4}
    first_read = listings() - before
    assert first_read <= 1 + 2 * 42  # the partitions, then a binary search and one listing each

    put(0, 3000, 3004)
    put(0, 3005, 3010)
    before = listings()
    archived = progress.archived()
    assert listings() - before == 1 + 2  # the partitions, and one listing per partition
    assert archived == ArchiveProgress(s3, bucket, topic).archived() == {0: 3010, 1: 4}

    before = listings()
    assert progress.archived() == {0: 3010, 1: 4}
    assert listings() - before == 3
