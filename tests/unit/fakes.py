"""In-memory stand-ins for unit tests only; integration tests use the real broker."""

from __future__ import annotations

import io

from events.log import LogUnavailable
from events.position import Position
from events.types import Event


class MemoryLog:
    """An event log that keeps events in lists, one per partition, keyed like Kafka would be."""

    def __init__(self, partitions: int = 2):
        self.partitions: list[list[Event]] = [[] for _ in range(partitions)]
        self.connected = True
        self.down = False

    async def start(self) -> None:
        self.connected = True

    async def stop(self) -> None:
        self.connected = False

    async def ping(self) -> None:
        if self.down:
            raise LogUnavailable("broker unreachable")

    async def append(self, event: Event) -> Position:
        if self.down:
            raise LogUnavailable("broker did not acknowledge")
        partition = hash(event.key) % len(self.partitions)
        self.partitions[partition].append(event)
        return Position(partition, len(self.partitions[partition]) - 1)

    @property
    def events(self) -> list[Event]:
        return [e for p in self.partitions for e in p]


class MemoryBucket:
    """Just enough of a boto3 S3 client for publishing a model: objects in a dict."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket, Key, Body, **_):
        self.objects[f"{Bucket}/{Key}"] = bytes(Body)

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.objects[f"{Bucket}/{Key}"])}
