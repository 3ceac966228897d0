"""`harmony rebuild` and `harmony verify` against the real broker (the archive part needs the archiver)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import msgspec
import pytest

from projections.store import Changes, ProjectionStore
from tests.conftest import BOTH_STORES, wait_until
from tests.integration.helpers import applied, assert_store_equals_log, produce_events, review_stream

pytestmark = pytest.mark.integration


def harmony(env, *args):
    return subprocess.run([sys.executable, "-m", "harmony", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def damage(store: ProjectionStore) -> None:
    """Change a current review's rating behind the projector's back (as a bug in it would), through
    the store's own write, with a version newer than any event's."""
    [victim] = store.user_reviews(min(row[0] for row in store.contents()["reviews"]), 1, None)
    since = store.checkpoint()
    assert store.apply(Changes(since=since, reviews={(victim.user_id, victim.movie_id): (
        10**12, msgspec.structs.replace(victim, rating=0.5))}, checkpoint=since))


@BOTH_STORES
def test_rebuild_from_the_log_equals_the_live_store_and_repairs_damage(settings, env, services, live_store):
    events = review_stream(4_000, seed=11, catalogue=0.05)
    produce_events(settings.kafka_bootstrap, settings.topic, events)
    store = live_store
    services("worker")
    wait_until(lambda: applied(store) == len(events), 90, "worker caught up")
    before = store.contents()

    # Damage a view; verify names it, a rebuild repairs it.
    damage(store)
    assert store.contents() != before
    checked = harmony(env, "verify", "--json")
    assert checked.returncode == 1
    assert "reviews row" in json.loads(checked.stdout)["projection"]["difference"]

    rebuilt = harmony(env, "rebuild", "reviews", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["from_log"] == len(events)
    assert store.contents() == before
    assert_store_equals_log(settings.kafka_bootstrap, settings.topic, store)
    verified = json.loads(harmony(env, "verify", "--json").stdout)
    assert verified["projection"]["difference"] is None


@BOTH_STORES
def test_rebuild_while_events_keep_arriving_stays_consistent(settings, env, services, live_store):
    produce_events(settings.kafka_bootstrap, settings.topic, review_stream(3_000, seed=12, catalogue=0.05))
    store = live_store
    services("worker")
    wait_until(lambda: applied(store) == 3_000, 90, "worker caught up")
    more = review_stream(3_000, seed=13, catalogue=0.05)
    writer = threading.Thread(target=produce_events, args=(settings.kafka_bootstrap, settings.topic, more))
    writer.start()
    rebuilt = harmony(env, "rebuild", "all", "--json")
    writer.join()
    assert rebuilt.returncode == 0, rebuilt.stderr
    wait_until(lambda: applied(store) == 6_000, 90, "worker caught up after the rebuild")
    verified = json.loads(harmony(env, "verify", "--json").stdout)
    assert verified["projection"]["difference"] is None
    assert_store_equals_log(settings.kafka_bootstrap, settings.topic, store)


@BOTH_STORES
def test_archiver_killed_mid_stream_then_verify_passes_and_rebuilds_match(settings, env, services, live_store):
    from archive.progress import ArchiveProgress
    from archive.segments import s3_client

    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    events = review_stream(20_000, seed=21, catalogue=0.05)
    produce_events(settings.kafka_bootstrap, settings.topic, events[:10_000])
    store = live_store
    services("worker")
    archiver = services("archiver")
    wait_until(lambda: sum(o + 1 for o in ArchiveProgress(s3, settings.s3_bucket, settings.topic).archived().values()) > 0,
               90, f"archiver wrote a first segment: {archiver.log()[-1500:]}")
    late = threading.Thread(target=produce_events, args=(settings.kafka_bootstrap, settings.topic, events[10_000:]))
    late.start()
    archiver.kill()
    late.join()
    services("archiver")

    def archived() -> int:
        return sum(o + 1 for o in ArchiveProgress(s3, settings.s3_bucket, settings.topic).archived().values())

    wait_until(lambda: archived() == len(events), 120, "restarted archiver reached the log end")
    wait_until(lambda: applied(store) == len(events), 120, "worker caught up")
    checked = harmony(env, "verify", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["archive"]["archived"] == report["archive"]["records"] == len(events)

    assert_store_equals_log(settings.kafka_bootstrap, settings.topic, store)
    live = store.contents()
    for flags in ((), ("--from-archive",)):
        rebuilt = harmony(env, "rebuild", "all", "--json", *flags)
        assert rebuilt.returncode == 0, rebuilt.stderr
        figures = json.loads(rebuilt.stdout)
        assert (figures["from_archive"] if flags else figures["from_log"]) == len(events)
        assert store.contents() == live, f"rebuild {flags or 'from the log'} differs from the live store"


def test_rebuild_from_an_archive_that_lost_its_first_segment_refuses(settings, env, services):
    from archive.progress import ArchiveProgress
    from archive.segments import ensure_bucket, list_segments, s3_client

    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(s3, settings.s3_bucket)
    events = review_stream(2_000, seed=31)
    produce_events(settings.kafka_bootstrap, settings.topic, events)
    env["HARMONY_ARCHIVE_SEGMENT_RECORDS"] = "100"  # several segments per partition
    archiver = services("archiver")
    wait_until(lambda: sum(o + 1 for o in ArchiveProgress(s3, settings.s3_bucket, settings.topic).archived().values())
               == len(events), 120, f"archiver reached the log end: {archiver.log()[-1500:]}")
    first, *rest = list_segments(s3, settings.s3_bucket, settings.topic)[0]
    assert first.first == 0 and rest
    s3.delete_object(Bucket=settings.s3_bucket, Key=first.key)  # lost: the archive now starts after the log

    rebuilt = harmony(env, "rebuild", "all", "--from-archive", "--json")
    assert rebuilt.returncode == 1 and rebuilt.stdout == ""
    assert f"hole in the archive of partition 0: offsets 0..{first.last}" in rebuilt.stderr
    # verify is not strict: it names the hole as a difference from the log.
    checked = harmony(env, "verify", "--json")
    assert checked.returncode == 1
    assert json.loads(checked.stdout)["archive"]["difference"].startswith("partition 0, record 0:")
