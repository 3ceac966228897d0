"""`harmony demo` as a user runs it: its own stack in a fresh state dir, a restarted worker, a Ctrl-C.

The demo imports what it finds in `<state dir>/data/ml-100k/` rather than downloading MovieLens
100K; the test puts a small RecBole-layout folder there (1,004 events) and has `harmony train` skip
tuning and the holdout, so the run is the stack's start, a one-second import and one small Spark fit.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from events.types import ReviewSubmitted
from harmony import stack as launcher
from tests.conftest import free_port, wait_until
from tests.integration.helpers import produce_events

pytestmark = pytest.mark.integration

USERS = MOVIES = 40
GENRES = ("Action", "Comedy", "Drama", "Romance", "Sci-Fi", "Thriller")


def demo_data(folder: Path) -> None:
    """MovieLens in RecBole's layout, where the demo keeps the one it downloads: ratings from a low-rank taste model."""
    rng = random.Random(13)
    folder.mkdir(parents=True)
    movies = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    movies += [f"{m}\tFilm {m}\t{1950 + m}\t{GENRES[m % 6]} {GENRES[m * 5 % 6]}\n" for m in range(1, MOVIES + 1)]
    (folder / "ml-100k.item").write_text("".join(movies))
    taste = [[rng.gauss(0, 1) for _ in range(2)] for _ in range(USERS)]
    kind = [[rng.gauss(0, 1) for _ in range(2)] for _ in range(MOVIES)]
    ratings = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    for user in range(USERS):
        for movie in range(MOVIES):
            if rng.random() < 0.6:
                score = 3.4 + sum(a * b for a, b in zip(taste[user], kind[movie])) + rng.gauss(0, 0.3)
                ratings.append(f"{user + 1}\t{movie + 1}\t{min(5, max(1, round(score)))}\t{880000000 + movie}\n")
    (folder / "ml-100k.inter").write_text("".join(ratings))


def children(pid: int) -> dict[int, str]:
    """The live processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def descendants(pid: int) -> set[int]:
    found = set(children(pid))
    for child in list(found):
        found |= descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def worker_pid(demo: subprocess.Popen) -> int | None:
    found = [pid for pid, command in children(demo.pid).items() if command.endswith("-m harmony worker ")]
    return found[0] if len(found) == 1 else None


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_demo_restarts_a_killed_worker_and_stops_cleanly_on_ctrl_c(tmp_path):
    state = tmp_path / "state"
    demo_data(state / "data" / "ml-100k")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HARMONY_", "AWS_"))}
    env.update(HARMONY_STATE_DIR=str(state), HARMONY_PARTITIONS="3", HARMONY_TRAIN_TUNE="0", HARMONY_ALS_RANK="4",
               HARMONY_ALS_MAX_ITER="5", HARMONY_SPARK_DRIVER_MEMORY="1g", HARMONY_TRAIN_HOLDOUT="0",
               HARMONY_LOG_FORMAT="json")
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # A process group of its own, as a shell gives a foreground job: the terminal's Ctrl-C goes to the group.
        demo = subprocess.Popen([sys.executable, "-m", "harmony", "demo", "--port", str(port)], env=env,
                                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: demo.poll() is not None or "moviEharmony is running" in out.read_text(), 600,
                   "the demo did not print its URL", interval=0.5)
        assert demo.poll() is None, err.read_text()[-3000:]
        assert f"open {url}/ in a browser" in out.read_text()
        assert answers(f"{url}/") and answers(f"{url}/v1/match?users=1,2&limit=3")

        first = worker_pid(demo)
        assert first, children(demo.pid)
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: worker_pid(demo) not in (None, first) and worker_pid(demo), 30,
                            "the demo did not restart its worker")
        now = datetime.now(timezone.utc)
        produce_events(launcher.status(state)["kafka_bootstrap"], "harmony.reviews", [ReviewSubmitted(
            event_id=str(uuid.uuid4()), occurred_at=now, recorded_at=now, user_id="ana", movie_id="7", rating=4.5,
            summary="after the restart", reviewed_at=now)])
        wait_until(lambda: httpx.get(f"{url}/v1/users/ana/reviews", timeout=10).json()["reviews"], 90,
                   "the restarted worker did not project a new review", interval=1)
        assert answers(f"{url}/") and worker_pid(demo) == second

        started = descendants(demo.pid)  # the worker, archiver and API, and the stack's services
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(120) == 0
    finally:
        if demo.poll() is None:  # a failure: the demo stops what it started on SIGTERM
            leftover = descendants(demo.pid)
            demo.terminate()
            try:
                demo.wait(90)
            except subprocess.TimeoutExpired:
                demo.kill()
                for pid in leftover:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            launcher.down(state)
    printed = out.read_text() + err.read_text()
    assert "a demo process exited" not in printed and "harmony demo:" not in printed, printed[-3000:]
    assert err.read_text().rstrip().endswith("stopped."), printed[-3000:]
    assert '"child":"worker"' in err.read_text() and '"exit":"killed by SIGKILL"' in err.read_text()
    assert not {pid for pid in started if alive(pid)}
