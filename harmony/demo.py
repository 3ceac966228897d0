"""`harmony demo`: the whole product with demo data and a trained model, until Ctrl-C; on the embedded
SQLite store by default, or with `--store cassandra` on an Apache Cassandra node the stack starts.
Training runs in Spark's local mode unless `--spark-workers N` has the stack start a standalone cluster.

The worker, the archiver and the API run as supervised children (`harmony.supervisor`), each in a
session of its own: a Ctrl-C reaches only the demo, which stops them and the stack it started.
The demo waits on facts that cannot be stale: the log's offsets from the broker after the
import, the store's checkpoint, the archive's segments in S3.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, TypeVar

from rich.console import Console

from archive.segments import Segment, list_segments, plan
from events.errors import HarmonyError
from events.reader import log_offsets
from harmony import bootstrap, stack
from harmony.settings import Settings, load as load_settings
from harmony.stack import StackError
from harmony.supervisor import Supervisor
from ml.registry import taste_rank
from projections.store import ProjectionStore

T = TypeVar("T")

console = Console(stderr=True)

RECBOLE = "recbole==1.2.1"  # its wheel carries MovieLens 100K; downloaded, never installed
MOVIELENS_IN_WHEEL = "recbole/dataset_example/ml-100k/"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STALL_TIMEOUT = 120.0  # seconds a wait sees no progress before it gives up
DEMO_USERS = ("1", "2")  # MovieLens users, whose accounts the demo opens
DEMO_PASSWORD = "moviEharmony-demo"  # printed by the demo: for trying it out, nothing else


def movielens_100k(settings: Settings) -> Path:
    """MovieLens 100K from the recbole wheel (GroupLens terms: research use; not committed here)."""
    target = settings.state_dir / "data" / "ml-100k"
    if (target / "ml-100k.inter").exists():
        return target
    downloads = settings.state_dir / "downloads"
    wheels = sorted(downloads.glob("recbole-*.whl"))
    if not wheels:
        console.print("[bold]downloading[/] the recbole 1.2.1 wheel (MovieLens 100K inside, ~2 MB of it used)")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(downloads), RECBOLE],
            capture_output=True, text=True,
        )
        wheels = sorted(downloads.glob("recbole-*.whl"))
        if done.returncode or not wheels:
            raise StackError(f"could not download {RECBOLE}: {done.stderr.strip().splitlines()[-1:]}")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name in wheel.namelist():
            if name.startswith(MOVIELENS_IN_WHEEL) and not name.endswith("/"):
                (target / Path(name).name).write_bytes(wheel.read(name))
    return target


def _readiness(url: str) -> tuple[bool, str]:
    """Whether the API answers ready, and what it answered."""
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return response.status == 200, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return False, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return False, str(error)


def _wait_ready(url: str, supervisor: Supervisor, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready, answer = _readiness(url)
        if ready:
            return
        if time.monotonic() > deadline:
            raise StackError(f"the API is not ready at {url} after {timeout:.0f}s (it answers {answer[:300]}); "
                             f"see its log {log_path}")
        supervisor.watch(0.3)


def behind(last: dict[int, int], position: dict[int, int]) -> dict[int, int]:
    """Records each partition still lacks: `last` and `position` are last offsets per partition
    (a partition absent from `position` has none)."""
    return {p: offset - position.get(p, -1) for p, offset in last.items() if position.get(p, -1) < offset}


def wait_until_covered(
    what: str, last: dict[int, int], position: Callable[[], dict[int, int]], *,
    watch: Callable[[float], None], log_path: Path, stall: float = STALL_TIMEOUT, interval: float = 1.0,
    progress: Callable[[int], None] = lambda behind: None,
) -> None:
    """Wait until `position()` reaches `last` in every partition, `watch`ing the children meanwhile.
    HarmonyError, naming what is behind by how much, when that has not shrunk for `stall` seconds."""
    fewest, since = None, time.monotonic()
    while gap := behind(last, position()):
        total = sum(gap.values())
        if fewest is None or total < fewest:
            fewest, since = total, time.monotonic()
        elif time.monotonic() - since >= stall:
            partitions = ", ".join(f"partition {p}: {n:,}" for p, n in sorted(gap.items()))
            raise HarmonyError(f"{what} is {total:,} records behind the log ({partitions}) and has not moved "
                               f"for {stall:g}s; see its log {log_path}")
        progress(total)
        watch(interval)


def archived_through(segments: list[Segment], start: int) -> int:
    """The last offset of one partition archived without a hole from `start` on (start - 1: none).
    Segments are uploaded concurrently, so a later one can be there before the one ahead of it."""
    covered = start - 1
    for segment in plan(segments, strict=False):
        if segment.first > covered + 1:
            break
        covered = max(covered, segment.last)
    return covered


def read_store(settings: Settings, read: Callable[[ProjectionStore], T]) -> T:
    """One answer from the projection store, opened for it and closed again."""
    store = bootstrap.store(settings)
    try:
        return read(store)
    finally:
        store.close()


def harmony(*args: str) -> list[str]:
    return [sys.executable, "-m", "harmony", *args]


def import_demo_data(settings: Settings, supervisor: Supervisor) -> None:
    """MovieLens 100K into the log, unless the store has projected something (an earlier demo did it)."""
    if read_store(settings, lambda store: store.checkpoint()):
        return
    data = movielens_100k(settings)
    console.print(f"[bold]importing[/] MovieLens 100K from {data}")
    if supervisor.run(harmony("import", "movielens", str(data))):
        raise StackError("the MovieLens import failed; see above")


def wait_projected(settings: Settings, last: dict[int, int], supervisor: Supervisor, log_path: Path) -> None:
    store = bootstrap.store(settings)
    try:
        with console.status("projecting the demo data ...") as status:
            wait_until_covered("the projection worker", last, store.checkpoint, watch=supervisor.watch,
                               log_path=log_path,
                               progress=lambda n: status.update(f"projecting the demo data ... {n:,} events to go"))
    finally:
        store.close()


def wait_archived(settings: Settings, log: dict[int, range], supervisor: Supervisor, log_path: Path) -> None:
    client = bootstrap.s3(settings)

    def archived() -> dict[int, int]:
        found = list_segments(client, settings.s3_bucket, settings.topic, log)
        return {p: archived_through(found[p], offsets.start) for p, offsets in log.items()}

    with console.status("archiving the demo data to S3 ...") as status:
        wait_until_covered("the archiver", last_offsets(log), archived, watch=supervisor.watch, log_path=log_path,
                           progress=lambda n: status.update(f"archiving the demo data to S3 ... {n:,} events to go"))


def last_offsets(log: dict[int, range]) -> dict[int, int]:
    """The last offset of each partition that holds records."""
    return {p: offsets.stop - 1 for p, offsets in log.items() if offsets}


def train_if_needed(settings: Settings, log: dict[int, range], supervisor: Supervisor, logs: Path) -> None:
    """Train a model once the archive holds the whole log as it was, unless one with taste factors exists."""
    current = read_store(settings, lambda store: store.model())
    if current is not None and taste_rank(current):
        return
    wait_archived(settings, log, supervisor, logs / "demo-archiver.log")
    console.print("[bold]training[/] a model from the S3 archive (Spark ALS; about a minute)")
    if supervisor.run(harmony("train")):
        raise StackError("training failed; see above")


class Stopped(Exception):
    """A SIGINT (Ctrl-C) or SIGTERM: the demo stops what it started and exits 0."""


def open_demo_accounts(settings: Settings) -> None:
    """Accounts for the demo's users (imported users have none), unless a previous demo opened them."""
    from commands.accounts import AccountTaken, OpenAccount

    for user_id in DEMO_USERS:
        try:
            asyncio.run(bootstrap.open_account(settings, OpenAccount(user_id, DEMO_PASSWORD)))
        except AccountTaken:
            pass


def _stop(signum: int, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def run(settings: Settings, host: str, port: int, store: str = "sqlite", spark_workers: int = 0) -> int:
    if not stack.port_free(port):
        raise StackError(f"port {port} is in use; pick another with --port")
    handlers = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS}
    was_running = stack.status(settings.state_dir)["running"]
    on_cassandra = store == "cassandra"
    supervisor = Supervisor()
    try:
        parts = ("SeaweedFS + Apache Kafka" + (" + Apache Cassandra" if on_cassandra else "")
                 + (f" + a Spark master and {spark_workers} worker(s)" if spark_workers else ""))
        with console.status(f"starting the local stack ({parts}) ..."):
            info = stack.up(settings.state_dir, settings.topic, settings.partitions, kafka_heap=settings.kafka_heap,
                            cassandra_nodes=int(on_cassandra), cassandra_heap=settings.cassandra_heap,
                            spark_workers=spark_workers, spark_memory=settings.spark_executor_memory)
        if on_cassandra:  # this process and every child it starts
            os.environ["HARMONY_STORE"] = info["cassandra"]["url"]
        if spark_workers:  # `harmony train` runs on the cluster
            os.environ["HARMONY_SPARK_MASTER"] = info["spark"]["master"]
        settings = load_settings()  # now with the endpoints of the stack just started
        logs = settings.state_dir / "logs"
        url = f"http://{host}:{port}"
        for name, *args in (["worker"], ["archiver"], ["api", "--host", host, "--port", str(port)]):
            supervisor.start(name, harmony(name, *args), logs / f"demo-{name}.log")
        with console.status("starting the projection worker, the archiver and the API ..."):
            _wait_ready(url, supervisor, logs / "demo-api.log")
        import_demo_data(settings, supervisor)
        # What the projection and the archive must reach: the log as the import left it.
        log = asyncio.run(log_offsets(settings.kafka_bootstrap, settings.topic))
        wait_projected(settings, last_offsets(log), supervisor, logs / "demo-worker.log")
        open_demo_accounts(settings)
        train_if_needed(settings, log, supervisor, logs)
        print(banner(url, info, settings, logs, on_cassandra), flush=True)  # plain: commands must not wrap
        supervisor.watch()  # until a signal, or a child that keeps failing
    except Stopped:
        return 0
    finally:
        for signum in STOP_SIGNALS:  # a second Ctrl-C does not cut the stopping short
            signal.signal(signum, signal.SIG_IGN)
        with console.status("stopping ..."):
            supervisor.stop()
            if not was_running:
                stack.down(settings.state_dir)
        console.print("stopped.")
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def spark_line(info: dict, settings: Settings) -> str:
    """The banner's line about the Spark cluster the demo trains on, if it trains on one."""
    if settings.spark_master != info.get("spark", {}).get("master"):
        return ""
    return (f"  spark {settings.spark_master} (web UI {info['spark']['webui']}; "
            "export HARMONY_SPARK_MASTER=that for `harmony train`)\n")


def banner(url: str, info: dict, settings: Settings, logs: Path, on_cassandra: bool) -> str:
    return f"""
moviEharmony is running: open {url}/ in a browser
  (try users 1 and 2 on the home page; user 1's reviews at {url}/users/1)
  HTTP API at {url}/v1/...  (OpenAPI: {url}/openapi.json)
  broker {info['kafka_bootstrap']}   S3 {info['s3_endpoint']}   logs {logs}
  store {settings.store_url}{"   (export HARMONY_STORE=that for other harmony commands)" if on_cassandra else ""}
{spark_line(info, settings)}
Try:
  curl -s '{url}/v1/match?users=1,2&limit=5'
  curl -s {url}/v1/users/1/reviews?limit=3
  curl -s {url}/v1/movies/50
  curl -s '{url}/v1/movies?q=star+wa'
  curl -s {url}/v1/users/1/history?limit=2
  curl -s {url}/v1/projections/lag
  curl -s {url}/v1/models/current

Writing needs an account. Users {" and ".join(DEMO_USERS)} have one, password {DEMO_PASSWORD}
(sign in at {url}/signin, or sign up as someone new at {url}/signup):
  TOKEN=$(curl -s -X POST {url}/v1/tokens -H 'content-type: application/json' \\
       -d '{{"user_id": "1", "password": "{DEMO_PASSWORD}"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -X POST {url}/v1/reviews -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
       -d '{{"user_id": "1", "movie_id": "50", "rating": 4.5, "summary": "still great"}}'
  curl -s -X DELETE {url}/v1/users/1/reviews/50 -H "authorization: Bearer $TOKEN"

Press Ctrl-C to stop everything."""
