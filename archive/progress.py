"""How far the archive has got, read cheaply enough to ask at every metrics scrape.

Listing a partition's segments costs one request per thousand, and an archive that writes a small
segment every few seconds grows by thousands a day. Segment keys sort in offset order within a
partition's folder, so the newest segment is found by a binary search over `StartAfter` probes
(about 40 requests, whatever the archive's size), and from then on only the segments written since
the last read are listed: one request per partition, plus one to find the partitions. Partitions
are read in parallel.

This is the one way to find the archive's end (the archiver's start position, /metrics, tests).
Compaction keeps it right: a merged object ends where the newest segment it covers ends and is
written before that one is deleted, so the greatest first offset's keys (or, later, the keys
listed after the greatest one seen) always include one that reaches the end.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from archive.segments import parse_segment_key, partition_prefix

OFFSET_DIGITS = 12  # the zero-padded width of offsets in segment keys
PARALLEL = 8  # partitions read at once (boto3 keeps 10 connections per client)


class ArchiveProgress:
    """Reads one topic's archive, remembering where each partition's listing got to."""

    def __init__(self, s3, bucket: str, topic: str):
        self._s3, self._bucket, self._topic = s3, bucket, topic
        self._lock = threading.Lock()  # concurrent scrapes read one after the other
        self._read: dict[int, tuple[str, int]] = {}  # partition -> (greatest key listed, last offset)

    def archived(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """The last archived offset of each partition that has segments, or of the partitions asked
        for (-1: none). After writers overlapped in a rebalance (a segment that reaches further but
        starts before the newest one), a first read may answer a little less until the next segment:
        an archiver starting there writes an overlapping segment, which readers trim."""
        with self._lock:
            chosen = self._partitions() if partitions is None else list(partitions)
            with ThreadPoolExecutor(PARALLEL, thread_name_prefix="archive-progress") as pool:
                for partition, read in zip(chosen, pool.map(self._read_partition, chosen)):
                    if read is not None:
                        self._read[partition] = read
            if partitions is None:
                return {partition: last for partition, (_, last) in sorted(self._read.items())}
            return {partition: self._read[partition][1] if partition in self._read else -1 for partition in chosen}

    def _read_partition(self, partition: int) -> tuple[str, int] | None:
        """The greatest key listed and the last offset; None: no segments."""
        start = self._read.get(partition) or self._newest_start(partition)
        return None if start is None else self._listed_after(partition, *start)

    def _partitions(self) -> list[int]:
        prefix = partition_prefix(self._topic)
        found = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                folder = common["Prefix"].removeprefix(prefix).rstrip("/")
                if folder.startswith("p") and folder[1:].isdigit():
                    found.append(int(folder[1:]))
        return found

    def _starts_at_or_after(self, partition: int, first: int) -> bool:
        """Whether the partition has a segment whose first offset is `first` or more."""
        prefix = partition_prefix(self._topic, partition)
        page = self._s3.list_objects_v2(Bucket=self._bucket, Prefix=prefix, MaxKeys=1,
                                        StartAfter=f"{prefix}{first:0{OFFSET_DIGITS}d}")
        return any(parse_segment_key(item["Key"]) for item in page.get("Contents", ()))

    def _newest_start(self, partition: int) -> tuple[str, int] | None:
        """Where listing the partition's newest segments begins: before the keys of the greatest
        first offset (found by binary search), and -1 as the last offset known; None: no segments."""
        if not self._starts_at_or_after(partition, 0):
            return None
        low, high = 0, 10**OFFSET_DIGITS  # a segment starts at `low` or later, none at `high` or later
        while high - low > 1:
            middle = (low + high) // 2
            if self._starts_at_or_after(partition, middle):
                low = middle
            else:
                high = middle
        return f"{partition_prefix(self._topic, partition)}{low:0{OFFSET_DIGITS}d}", -1

    def _listed_after(self, partition: int, after: str, last: int) -> tuple[str, int]:
        """The greatest key and the last offset, with the segments listed after the key `after`."""
        for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=partition_prefix(self._topic, partition), StartAfter=after):
            for item in page.get("Contents", ()):
                segment = parse_segment_key(item["Key"])
                if segment is not None:
                    after, last = item["Key"], max(last, segment.last)
        return after, last
