"""`harmony import` end to end: generated MovieLens and Amazon files -> Kafka -> projector -> API,
and a second import of the same files changes no projection."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from events.codec import Sealer, decode
from events.log import KafkaEventLog
from events.reader import read_log
from events.types import ReviewSubmitted
from harmony import bootstrap
from projections.sqlite_store import SQLiteStore
from tests.conftest import wait_until
from tests.integration.helpers import assert_store_equals_log

pytestmark = pytest.mark.integration

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def harmony_import(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harmony", "import", *args], env=env, capture_output=True, text=True, timeout=120
    )


def imported(env: dict, *args: str) -> dict:
    done = harmony_import(env, *args, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def write_movielens(folder: Path, rng: random.Random) -> dict[tuple[str, str], float]:
    """A 100K-layout folder: 40 movies, 30 users, ~600 ratings, one bad row; answers the expected ratings."""
    folder.mkdir()
    lines = []
    for movie in range(1, 41):
        genre_flags = ["1" if g in (GENRES[movie % 19], GENRES[(movie * 7) % 19]) else "0" for g in GENRES]
        lines.append(f"{movie}|Movie number {movie}, The ({1960 + movie})|01-Jan-{1960 + movie}||http://x|"
                     + "|".join(genre_flags))
    (folder / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)))
    expected: dict[tuple[str, str], float] = {}
    rows = []
    ts = 880_000_000
    for user in range(1, 31):
        for movie in rng.sample(range(1, 41), 20):
            rating = rng.randrange(1, 6)
            ts += rng.randrange(1, 5000)
            rows.append(f"{user}\t{movie}\t{rating}\t{ts}")
            expected[(str(user), str(movie))] = float(rating)
    # A user re-rates a movie later in the file: the later row (later in the log, same key) wins.
    first = rows[0].split("\t")
    rows.append(f"{first[0]}\t{first[1]}\t{(int(first[2]) % 5) + 1}\t{ts + 10}")
    expected[(first[0], first[1])] = float((int(first[2]) % 5) + 1)
    rows.insert(5, "3\t4\t9\t881250949")  # line 6: a rating out of range
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    return expected


def write_amazon(path: Path, rng: random.Random) -> dict[tuple[str, str], dict]:
    expected = {}
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for i in range(200):
            user, movie = f"A{i % 25:04d}", f"B{i % 17:08d}X"
            text = "long " * 5000 if i == 7 else f"review {i} of {movie}"
            row = {"reviewerID": user, "asin": movie, "overall": float(rng.randrange(1, 6)),
                   "summary": f"summary {i}", "reviewText": text, "unixReviewTime": 1_300_000_000 + i * 3600,
                   "reviewerName": "Someone", "verified": True}
            out.write(json.dumps(row) + "\n")
            expected[(user, movie)] = {"rating": row["overall"], "summary": row["summary"], "text": text[:20_000]}
    return expected


def all_reviews(client: httpx.Client, user: str) -> dict[str, dict]:
    found, cursor = {}, None
    while True:
        page = client.get(f"/v1/users/{user}/reviews", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        found.update({r["movie_id"]: r for r in body["reviews"]})
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def caught_up(store: SQLiteStore, *figures: dict) -> None:
    ends: dict[int, int] = defaultdict(lambda: -1)
    for figure in figures:
        for partition, offset in figure["last_offsets"].items():
            ends[int(partition)] = max(ends[int(partition)], offset)

    def done() -> bool:
        checkpoint = store.checkpoint()
        return all(checkpoint.get(p, -1) >= end for p, end in ends.items())

    wait_until(done, 90, f"projector caught up to {dict(ends)}")


def test_import_movielens_and_amazon_then_reimport_changes_nothing(env, settings, tmp_path, api, start_worker):
    rng = random.Random(3)
    movielens = write_movielens(tmp_path / "ml", rng)
    amazon = write_amazon(tmp_path / "reviews.json.gz", rng)

    # --strict meets the bad row on line 6 and appends nothing.
    strict = harmony_import(env, "movielens", str(tmp_path / "ml"), "--strict", "--json")
    assert strict.returncode == 1 and strict.stdout == ""
    assert "u.data line 6: rating 9 is not 0.5 to 5 in half steps" in strict.stderr
    assert "nothing was appended" in strict.stderr

    start_worker()
    ml = imported(env, "movielens", str(tmp_path / "ml"))
    assert (ml["reviews"], ml["movies"], ml["bad_rows"]) == (601, 40, 1)
    assert ml["events_appended"] == 641
    assert ml["bad_row_examples"] == ["u.data line 6: rating 9 is not 0.5 to 5 in half steps"]
    # The topic was empty before (the strict run appended nothing): the offsets account for every event.
    assert sum(offset + 1 for offset in ml["last_offsets"].values()) == 641
    az = imported(env, "amazon", str(tmp_path / "reviews.json.gz"))
    assert (az["reviews"], az["movies"], az["bad_rows"], az["truncated_texts"]) == (200, 0, 0, 1)

    store = SQLiteStore(settings.store_url.removeprefix("sqlite:///"))
    try:
        caught_up(store, ml, az)

        # Reviews: every user's current reviews, with the later re-rating winning.
        for user in {u for u, _ in movielens}:
            got = {movie: r["rating"] for movie, r in all_reviews(api, user).items()}
            assert got == {m: rating for (u, m), rating in movielens.items() if u == user}, user
        for user in {u for u, _ in amazon}:
            got = all_reviews(api, user)
            want = {m: e for (u, m), e in amazon.items() if u == user}
            assert {m: (r["rating"], r["summary"], r["text"]) for m, r in got.items()} == {
                m: (e["rating"], e["summary"], e["text"]) for m, e in want.items()}

        # The catalogue, with statistics from the imported reviews.
        for movie in ("1", "7", "40"):
            body = api.get(f"/v1/movies/{movie}").json()
            ratings = [rating for (_, m), rating in movielens.items() if m == movie]
            number = int(movie)
            assert (body["title"], body["year"]) == (f"Movie number {number}, The", 1960 + number)
            assert body["genres"] == [g for g in GENRES if g in (GENRES[number % 19], GENRES[(number * 7) % 19])
                                      and g != "unknown"]
            assert body["review_count"] == len(ratings)
            assert body["mean_rating"] == pytest.approx(sum(ratings) / len(ratings))
        asin = "B00000003X"
        ratings = [e["rating"] for (_, m), e in amazon.items() if m == asin]
        body = api.get(f"/v1/movies/{asin}").json()
        assert (body["title"], body["review_count"]) == (None, len(ratings))
        assert body["mean_rating"] == pytest.approx(sum(ratings) / len(ratings))

        # The same files again: new records in the log, the same event ids, no change in any view.
        before = store.contents()
        ml_again = imported(env, "movielens", str(tmp_path / "ml"))
        az_again = imported(env, "amazon", str(tmp_path / "reviews.json.gz"))
        assert (ml_again["events_appended"], az_again["events_appended"]) == (641, 200)
        caught_up(store, ml_again, az_again)
        after = store.contents()
        assert after["checkpoints"] != before["checkpoints"]  # the projector did read the new records
        for view in ("reviews", "movies", "history"):
            assert after[view] == before[view], view
        # And they are what the reference fold of the whole log (both imports, twice) leaves.
        assert_store_equals_log(settings.kafka_bootstrap, settings.topic, store)
    finally:
        store.close()


def test_import_text_output_and_exit_status(env, tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::10::4::978300760\n1::11::x::978300761\n")
    done = harmony_import(env, "movielens", str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "imported 1 reviews and 0 movies" in done.stderr
    assert "ratings.dat line 2: rating 'x' is not a number" in done.stderr
    assert "no movie file beside ratings.dat" in done.stderr

    (folder / "ratings.dat").write_text("garbage\n")
    nothing = harmony_import(env, "movielens", str(folder))
    assert nothing.returncode == 1
    assert "nothing to import" in nothing.stderr


def test_append_bulk_keeps_each_users_order_across_batches(settings):
    """Many ~1 MB batches per partition: every user's events come back in the order they were given."""
    now = datetime.now(timezone.utc)
    users = [f"u{i}" for i in range(7)]
    count = 30_000
    events = (
        ReviewSubmitted(event_id=f"e{i}", occurred_at=now, recorded_at=now, user_id=users[i % 7],
                        movie_id=f"m{i}", rating=3.0, text="x" * 300, reviewed_at=now, source="test")
        for i in range(count)
    )

    keys = bootstrap.keyring(settings)

    async def scenario():
        log = KafkaEventLog(settings.kafka_bootstrap, settings.topic, timeout=30, linger_ms=20, sealer=Sealer(keys))
        await log.start()
        acked = []
        try:
            positions = await log.append_bulk(events, on_acked=acked.append)
        finally:
            await log.stop()
        order: dict[str, list[int]] = defaultdict(list)
        records = 0
        async for batch in read_log(settings.kafka_bootstrap, settings.topic):
            for record in sorted(batch, key=lambda r: (r.partition, r.offset)):
                event = decode(record.value, keys)
                order[event.user_id].append(int(event.event_id[1:]))
                records += 1
        return positions, acked, order, records

    positions, acked, order, records = asyncio.run(scenario())
    assert sum(acked) == records == count
    assert len(acked) > 8  # it really was many batches
    assert sum(p.offset + 1 for p in positions) == count
    for user, sequence in order.items():
        assert sequence == sorted(sequence) and len(sequence) == len(range(users.index(user), count, 7)), user


def test_appends_and_bulk_appends_put_a_key_where_kafkas_own_partitioner_does(settings):
    """A user's events must share a partition whoever appended them (the API, an import, a Java
    client, Faust): murmur2 of the key (the user's subject), as Kafka's DefaultPartitioner (a
    producer library's default may differ: librdkafka's is CRC32)."""
    from aiokafka.partitioner import DefaultPartitioner

    now = datetime.now(timezone.utc)

    def event(i: int, user: str) -> ReviewSubmitted:
        return ReviewSubmitted(event_id=f"p{i}", occurred_at=now, recorded_at=now, user_id=user,
                               movie_id="m", rating=3.0, reviewed_at=now, source="test")

    users = [f"user {i} ∂" for i in range(60)]
    keys = bootstrap.keyring(settings)

    async def scenario():
        log = KafkaEventLog(settings.kafka_bootstrap, settings.topic, timeout=30, sealer=Sealer(keys))
        await log.start()
        try:
            one_by_one = await asyncio.gather(*(log.append(event(i, user)) for i, user in enumerate(users)))
            await log.append_bulk(event(100 + i, user) for i, user in enumerate(users))
        finally:
            await log.stop()
        where: dict[str, set[int]] = defaultdict(set)
        async for batch in read_log(settings.kafka_bootstrap, settings.topic):
            for record in batch:
                opened = decode(record.value, keys)
                if opened.event_id.startswith("p"):
                    where[opened.user_id].add(record.partition)
        return one_by_one, where

    one_by_one, where = asyncio.run(scenario())
    partitions = list(range(settings.partitions))
    expected = {user: DefaultPartitioner()(keys.known_subject(user).encode(), partitions, partitions) for user in users}
    assert [p.partition for p in one_by_one] == [expected[user] for user in users]
    assert where == {user: {expected[user]} for user in users}
    assert len(set(expected.values())) > 1
