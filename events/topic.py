"""The review topic's spec, created idempotently at start."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    # Events are the source of truth: never delete them.
    config: tuple[tuple[str, str], ...] = (("retention.ms", "-1"), ("retention.bytes", "-1"))


def deadletter_topic(topic: str) -> str:
    """Where the projector sends the records of `topic` that are not valid events."""
    return f"{topic}.deadletter"


def accounts_topic(topic: str) -> str:
    """Where the accounts of the users writing to `topic` are opened."""
    return f"{topic}.accounts"


def review_topics(topic: str, partitions: int) -> list[TopicSpec]:
    """The review log (keyed by user id), its dead-letter topic and the accounts topic.

    Accounts: one partition, so one order decides who opened an id first. Not compacted:
    compaction keeps the last record of a key, which would hand an id to the loser of a race.
    """
    return [TopicSpec(topic, partitions), TopicSpec(deadletter_topic(topic), 1),
            TopicSpec(accounts_topic(topic), 1)]


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0) -> dict[str, int]:
    """Create the topics that do not exist yet; answer each topic's partition count.

    Retriable errors (a broker of the cluster down or restarting) are retried until `timeout`,
    so a process started during a broker's restart waits for the cluster instead of exiting.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await _ensure_topics(bootstrap, specs)
        except KafkaError as error:
            if not error.retriable or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    # Replication -1: the cluster's default.replication.factor (three on a three-broker
                    # stack); aiokafka accepts -1 only beside an (empty) replica assignment.
                    [NewTopic(s.name, s.partitions, -1, replica_assignments={}, topic_configs=dict(s.config))
                     for s in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process won the race
        described = await admin.describe_topics([spec.name for spec in specs])
        return {topic["topic"]: len(topic["partitions"]) for topic in described}
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete these topics (and every record in them), those that exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if gone := [name for name in names if name in existing]:
            await admin.delete_topics(gone)
    finally:
        await admin.close()
