"""`harmony migrate`: a log written in clear (before sealing) copied into a new topic, sealed, and
the old one deleted; the new log folds to the same reviews and catalogue."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from events.reader import read_log
from events.types import AccountOpened
from tests.integration.helpers import fold_of_log, produce, produce_events, review_stream

pytestmark = pytest.mark.integration


def topics(bootstrap: str) -> set[str]:
    async def listed():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listed())


def records(bootstrap: str, topic: str) -> list:
    async def read():
        return [record async for batch in read_log(bootstrap, topic) for record in batch]

    return asyncio.run(read())


def test_a_clear_log_is_copied_sealed_and_the_old_one_deleted(env, settings):
    events = review_stream(600, users=12, movies=30, catalogue=0.1)
    produce_events(settings.kafka_bootstrap, settings.topic, events)
    asyncio.run(produce(settings.kafka_bootstrap, settings.topic, [(b"u1", b"not an event")]))
    now = datetime.now(timezone.utc)
    opening = AccountOpened(event_id="o1", occurred_at=now, recorded_at=now, user_id="u1", password_hash="$argon2id$x")
    produce_events(settings.kafka_bootstrap, f"{settings.topic}.accounts", [opening])
    before = fold_of_log(settings.kafka_bootstrap, settings.topic)
    target = f"{settings.topic}.sealed-{uuid.uuid4().hex[:6]}"

    done = subprocess.run([sys.executable, "-m", "harmony", "migrate", target, "--delete-old", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["copied"][target] == {"events": len(events), "left_behind": {"undecodable": 1}}
    assert figures["copied"][f"{target}.accounts"]["events"] == 1

    copied = records(settings.kafka_bootstrap, target) + records(settings.kafka_bootstrap, f"{target}.accounts")
    personal = [r for r in copied if not r.key.startswith(b"movie:")]
    assert personal and all(b'"sealed"' in r.value and b"user_id" not in r.value and b"$argon2id$" not in r.value
                            for r in personal)
    after = fold_of_log(settings.kafka_bootstrap, target)
    assert after.reviews == before.reviews and after.movies == before.movies
    assert not {settings.topic, f"{settings.topic}.accounts", f"{settings.topic}.deadletter"} & topics(
        settings.kafka_bootstrap)
