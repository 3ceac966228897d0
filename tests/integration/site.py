"""The website under test, shared by the browser and accessibility checks: the product on the session's
stack (Apache Kafka and SeaweedFS, the projection worker, the archiver, the API serving the site) with a
small MovieLens-format import, a diary of reviews, accounts, and a model trained by `harmony train`.

`site` is a session fixture (tests/integration/conftest.py offers it to every module)."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from events.types import ReviewRetracted, ReviewSubmitted
from tests.conftest import Service, free_port, use_environment, wait_until
from tests.integration.helpers import applied, log_end, produce_events

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
TITLES = [("Star Wars (1977)", "Action|Sci-Fi"), ("Star Trek: First Contact (1996)", "Sci-Fi"),
          ("Amélie (2001)", "Comedy|Romance"), ("Schindler's List (1993)", "Drama|War"),
          ("Heat (1995)", "Crime|Thriller"), ("Fargo (1996)", "Crime|Drama"), ("Alien (1979)", "Horror|Sci-Fi"),
          ("Casablanca (1942)", "Drama|Romance"), ("Toy Story (1995)", "Animation|Comedy"),
          ("Godfather, The (1972)", "Crime|Drama"), ("Vertigo (1958)", "Mystery|Thriller"),
          ("Babe (1995)", "Children's|Comedy"), ("Twelve Monkeys (1995)", "Sci-Fi|Thriller"),
          ("Mononoke-hime (1997)", "Animation|Fantasy"), ("Cinéma Paradiso (1988)", "Drama|Romance")]
TITLES += [(f"Film Number {n} ({1960 + n})", GENRES[1 + n % 18]) for n in range(25)]
USERS = 30
HISTORY_USER = "diarist"  # reviews recorded day by day in March 2024
MARCH = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
WRITERS = ("web-writer", "nojs-writer", "careful-writer", "outage-writer")  # accounts the fixture opens
REVIEWER = "1"  # an imported user with reviews, given an account by the fixture as `harmony accounts add` does
PASSWORD = "a long browser passphrase"


def movielens_folder(path: Path) -> Path:
    """A small MovieLens 100K-format folder: ratings from a low-rank taste model, titles with accents."""
    rng = random.Random(5)
    path.mkdir()
    (path / "u.genre").write_text("".join(f"{name}|{n}\n" for n, name in enumerate(GENRES)), "latin-1")
    lines = []
    for n, (title, genres) in enumerate(TITLES, 1):
        flags = "|".join("1" if name in genres.split("|") else "0" for name in GENRES)
        lines.append(f"{n}|{title}|01-Jan-1995||http://example.org/{n}|{flags}\n")
    (path / "u.item").write_text("".join(lines), "latin-1")
    taste = [[rng.gauss(0, 1) for _ in range(2)] for _ in range(USERS)]
    kind = [[rng.gauss(0, 1) for _ in range(2)] for _ in TITLES]
    ratings = []
    for user in range(USERS):
        for movie in range(len(TITLES)):
            if rng.random() < 0.6:
                score = 3.4 + sum(a * b for a, b in zip(taste[user], kind[movie])) + rng.gauss(0, 0.3)
                ratings.append(f"{user + 1}\t{movie + 1}\t{min(5, max(1, round(score)))}\t{880000000 + movie}\n")
    (path / "u.data").write_text("".join(ratings))
    return path


def diary() -> list:
    """HISTORY_USER's reviews, one a day through March 2024, with a replacement and a retraction."""
    events = []
    for day in range(24):
        at = MARCH + timedelta(days=day)
        events.append(ReviewSubmitted(event_id=str(uuid.uuid4()), occurred_at=at, recorded_at=at,
                                      user_id=HISTORY_USER, movie_id=str(day % 15 + 1), rating=1 + day % 9 / 2,
                                      summary=f"day {day + 1}", reviewed_at=at))
    at = MARCH + timedelta(days=24)
    events.append(ReviewRetracted(event_id=str(uuid.uuid4()), occurred_at=at, recorded_at=at,
                                  user_id=HISTORY_USER, movie_id="1"))
    return events


def harmony(env: dict, *args: str, timeout: float = 300, stdin: str | None = None) -> str:
    run = subprocess.run([sys.executable, "-m", "harmony", *args], env=env, capture_output=True, text=True,
                         timeout=timeout, input=stdin)
    assert run.returncode == 0, f"harmony {' '.join(args)}: {run.stderr[-3000:]}"
    return run.stdout


def start_api(env: dict, log_path: Path) -> tuple[Service, str]:
    port = free_port()
    service = Service(["api", "--port", str(port)], env, log_path).start()
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 30, f"the API did not start: {service.log()[-2000:]}")
    return service, url


@pytest.fixture(scope="session")
def site(stack_dir, tmp_path_factory):
    """The product on the session's stack with demo-like data and a trained model: the site's URL, its
    environment and folder. Built once for every module that browses it (a build takes minutes)."""
    from archive.progress import ArchiveProgress
    from harmony import bootstrap
    from harmony.settings import load

    folder = tmp_path_factory.mktemp("site")
    # This process's environment names the site's settings only while they are read: the site outlives
    # every module, and children of later tests copy os.environ.
    with pytest.MonkeyPatch.context() as patch:
        env = use_environment(patch, stack_dir, f"sqlite:///{folder / 'projections.db'}",
                              HARMONY_ALS_RANK="4", HARMONY_ALS_MAX_ITER="5", HARMONY_SPARK_DRIVER_MEMORY="1g",
                              HARMONY_TRAIN_HOLDOUT="0")  # the pages show no holdout figure
        settings = load()
    harmony(env, "import", "movielens", str(movielens_folder(folder / "ml")))
    produce_events(settings.kafka_bootstrap, settings.topic, diary())
    services = [Service([name], env, folder / f"{name}.log").start() for name in ("worker", "archiver")]
    try:
        store = bootstrap.store(settings)
        s3 = bootstrap.s3(settings)
        end = sum(log_end(settings.kafka_bootstrap, settings.topic).values())
        wait_until(lambda: applied(store) == end, 120, f"worker behind: {services[0].log()[-2000:]}", 0.5)
        checkpoint = store.checkpoint()
        wait_until(lambda: all(o >= checkpoint[p] for p, o in ArchiveProgress(
            s3, settings.s3_bucket, settings.topic).archived(checkpoint).items()), 120,
            f"archiver behind: {services[1].log()[-2000:]}", 0.5)
        store.close()
        harmony(env, "train", "--no-tune")
        api, url = start_api(env, folder / "api.log")
        services.append(api)
        for user in WRITERS:
            opened = httpx.post(f"{url}/v1/accounts", json={"user_id": user, "password": PASSWORD}, timeout=30)
            assert opened.status_code == 201, opened.text
        harmony(env, "accounts", "add", REVIEWER, "--password-stdin", stdin=f"{PASSWORD}\n")
        yield {"url": url, "env": env, "folder": folder}
    finally:
        for service in services:
            service.stop()
