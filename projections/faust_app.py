"""The Faust settings every harmony app shares: no Faust state, offsets committed often."""

from __future__ import annotations

import faust

from harmony.settings import Settings


def faust_app(group: str, settings: Settings, batch_size: int, buffered_batches: int) -> faust.App:
    return faust.App(
        group,  # the app id is the consumer group
        broker=f"kafka://{settings.kafka_bootstrap}",
        # Exactly-once in effect comes from the stores' checkpoints (the projection store, S3), not
        # from Kafka transactions.
        processing_guarantee="at_least_once",
        broker_session_timeout=10,  # a dead member's partitions move on within seconds
        broker_heartbeat_interval=2,
        broker_commit_every=batch_size,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        store="memory://",  # no Faust tables: state lives in the projection store or in S3
        datadir=str(settings.state_dir / "faust"),  # Faust writes a folder per app; keep it in the state dir
        topic_disable_leader=True,  # no leader election is needed, so no internal topic to replicate
        web_enabled=False,
        autodiscover=False,
        stream_buffer_maxsize=buffered_batches * batch_size,
    )
