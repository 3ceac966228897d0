"""The broker or S3 away for a while, under load: the worker and the archiver ride it out and go on by
themselves, and every event ends up projected once and archived.

An outage SIGKILLs the server, as a fault run did, and starts it again on its ports (`harmony stack up`
starts what is not running). The session's stack is used: tests run one at a time, and each outage brings
the server back even when its test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import datetime, timezone

import pytest

from archive.progress import ArchiveProgress
from archive.segments import s3_client
from harmony import stack as launcher
from tests.conftest import PARTITIONS, Service, wait_until
from tests.integration.helpers import applied, assert_store_equals_log, log_end, produce_events, review_stream
from tests.integration.test_archiver import assert_archive_is_the_log

pytestmark = pytest.mark.integration

OUTAGE = 8  # seconds before a killed server is started again (starting the broker takes 8 s or more)
BUSY = 20_000  # events in the log as the server goes: the worker and the archiver are reading them
LATER = 2_000  # events produced during an S3 outage, or once the broker is back
# Both read the backlog straight from the log (the path a broker outage broke) and write small segments often.
FAST = {"HARMONY_CATCH_UP_LAG": "1000", "HARMONY_ARCHIVE_FAST_LAG": "1000", "HARMONY_ARCHIVE_SEGMENT_AGE": "1"}


@pytest.fixture
def running(env, live_store, tmp_path):
    """A projection worker and an archiver on this test's topic, the worker reporting its lag."""
    started = [Service([name], {**env, **FAST}, tmp_path / f"{name}.log").start() for name in ("worker", "archiver")]
    wait_until(live_store.lag_reported_at, 60, f"the worker never reported its lag: {started[0].log()[-2000:]}")
    yield started
    for service in started:
        service.stop()


@contextlib.contextmanager
def away(stack_dir, settings, service: str):
    """SIGKILL one server of the stack; start it again on leaving."""
    pid = launcher.status(stack_dir)["services"][service]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not launcher._alive(pid), 30, f"{service} (pid {pid}) died")
    try:
        yield
    finally:
        launcher.up(stack_dir, settings.topic, PARTITIONS)


def reports_on(store, since) -> bool:
    """The worker recorded its lag after `since`."""
    return store.lag_reported_at() > since


def assert_alive(*services: Service) -> None:
    for service in services:
        assert service.process.poll() is None, f"{service.args[0]} exited: {service.log()[-3000:]}"


def assert_all_projected_once_and_archived(settings, store, services: list[Service]) -> None:
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    end = log_end(settings.kafka_bootstrap, settings.topic)
    total = sum(end.values())
    wait_until(lambda: applied(store) == total, 120, f"the worker went on: {services[0].log()[-2000:]}", 0.2)
    # The lag report moves again, and says what is true: nothing left to project.
    done = datetime.now(timezone.utc)
    wait_until(lambda: reports_on(store, done), 10, f"the worker reports its lag: {services[0].log()[-2000:]}")
    assert [lag.lag for lag in store.lag()] == [0] * PARTITIONS
    wait_until(lambda: sum(o + 1 for o in ArchiveProgress(s3, settings.s3_bucket, settings.topic).archived().values()) == total,
               120, f"the archiver went on: {services[1].log()[-2000:]}", 0.2)
    assert_alive(*services)
    assert_store_equals_log(settings.kafka_bootstrap, settings.topic, store)
    assert_archive_is_the_log(s3, settings.s3_bucket, settings)


def test_the_worker_and_the_archiver_ride_out_a_broker_outage(settings, live_store, running, stack_dir):
    events = review_stream(BUSY + LATER, seed=13, catalogue=0.05)
    produce_events(settings.kafka_bootstrap, settings.topic, events[:BUSY])
    with away(stack_dir, settings, "kafka-1"):
        assert applied(live_store) < BUSY, "the worker finished before the broker went: make the stream longer"
        reported = live_store.lag_reported_at()
        time.sleep(OUTAGE)
        assert_alive(*running)
        # The lag report goes on while the broker is away: a projector that stopped reporting stopped.
        assert reports_on(live_store, reported)
    produce_events(settings.kafka_bootstrap, settings.topic, events[BUSY:])
    assert_all_projected_once_and_archived(settings, live_store, running)


def test_the_archiver_rides_out_an_s3_outage(settings, live_store, running, stack_dir, tmp_path, monkeypatch):
    events = review_stream(BUSY + LATER, seed=17, catalogue=0.05)
    produce_events(settings.kafka_bootstrap, settings.topic, events[:BUSY])
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # SeaweedFS's own logs used to land there at each start
    with away(stack_dir, settings, "s3"):
        produce_events(settings.kafka_bootstrap, settings.topic, events[BUSY:])
        time.sleep(OUTAGE)
        assert_alive(*running)
    assert_all_projected_once_and_archived(settings, live_store, running)
    assert not list(tmp_path.glob("weed*"))  # they are in the stack's logs/seaweedfs.log
