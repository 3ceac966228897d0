"""Shared pieces of the benchmarks: a throwaway local stack, child processes, CPU and memory readings,
synthetic reviews, output (progress on stderr, figures and one JSON object on stdout), a py-spy profile."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
import zlib
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harmony.supervisor import Process

# Progress and diagnostics go to stderr; stdout carries only the figures (and, with --json, only JSON).
console = Console(stderr=True)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"  # ignored by git
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def base_parser(doc: str, partitions: int | None = 6, profile: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark has; its description is the first paragraph of the module's `doc`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory (logs, data)")
    if partitions:
        parser.add_argument("--partitions", type=int, default=partitions,
                            help=f"partitions of the benchmark topics ({partitions})")
    if profile:
        parser.add_argument("--profile-dir", type=Path, default=None,
                            help="profile the service under test with py-spy and write its stacks here")
    return parser


def add_backlog_arguments(parser: argparse.ArgumentParser) -> None:
    """The backlog a catch-up benchmark projects: its size, shape and how it is produced."""
    parser.add_argument("--events", type=int, default=200_000, help="events in the backlog (200000)")
    parser.add_argument("--users", type=int, default=5000, help="distinct users (5000)")
    parser.add_argument("--movies", type=int, default=2000, help="distinct movies (2000)")
    parser.add_argument("--linger-ms", type=int, default=50, help="linger of the producer filling the topics (50)")


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while tearing down, so a second Ctrl-C does not leave services running
    (each stop is bounded: SIGKILL after a timeout)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def install_sigterm() -> None:
    """SIGTERM ends the benchmark like Ctrl-C, so the stack is still taken down."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# -- the stack and child processes ------------------------------------------------------


@contextlib.contextmanager
def scratch(name: str, keep: bool = False) -> Iterator[Path]:
    """A temporary directory, removed afterwards unless `keep`."""
    directory = Path(tempfile.mkdtemp(prefix=f"harmony-bench-{name}-"))
    try:
        yield directory
    finally:
        if keep:
            console.log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def local_stack(name: str, topic: str, partitions: int, keep: bool = False,
                **services) -> Iterator[tuple[Path, dict]]:
    """A fresh local stack in a temporary state directory (`services`: more of `harmony.stack.up`'s
    arguments, e.g. spark_workers); always taken down (and removed) afterwards."""
    from harmony import stack

    with scratch(name, keep) as directory:
        try:
            with console.status("starting the local stack (SeaweedFS + Kafka)…"):
                info = stack.up(directory, topic, partitions, **services)
            console.log(f"stack up: kafka {info['kafka_bootstrap']}, s3 {info['s3_endpoint']}, state {directory}")
            yield directory, info
        finally:
            with uninterrupted(), console.status("stopping the local stack…"):
                stack.down(directory)


def open_store(url: str):
    """The projection store `url` names, built by the composition root as the product builds it."""
    import dataclasses

    from harmony import bootstrap
    from harmony.settings import load

    return bootstrap.store(dataclasses.replace(load(), store_url=url))


def sqlite_store(path: Path):
    return open_store(f"sqlite:///{path}")


def service_pids(info: dict) -> dict[str, int]:
    """PIDs of the stack's services from stack.status(), named for CPU and memory tables:
    {"s3 (seaweedfs)": pid, "kafka-1": pid, ...} (one "kafka-N" per broker)."""
    return {("s3 (seaweedfs)" if name == "s3" else name): service["pid"] for name, service in info["services"].items()}


def rss_mib(pid: int) -> float | None:
    """Resident memory (VmRSS, /proc/<pid>/status) of a process in MiB, None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child(Process):
    """A `python -m harmony …` child process (or `python -m <module> …`), started at once, with its output
    in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None,
                 module: str = "harmony"):
        super().__init__([sys.executable, "-m", module, *args], log_path, env, cwd)
        self.start()

    def stop(self, timeout: float = 30.0) -> None:
        with uninterrupted():
            super().stop(timeout)

    def tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def check(self, what: str = "the child") -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {self.process.returncode}:\n{self.tail()}")

    def ready(self, port: int, path: str = "/readyz", timeout: float = 90.0) -> float:
        """Seconds from the start until GET `path` on `port` answers 200."""
        import httpx

        last = "no answer"
        with console.status(f"waiting for GET {path} to answer 200…"):
            while time.monotonic() - self.started < timeout:
                self.check()
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
                    if response.status_code == 200:
                        return time.monotonic() - self.started
                    last = f"{response.status_code} {response.text[:300]}"
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"GET {path} did not answer 200 within {timeout:.0f}s ({last}):\n{self.tail()}")

    def children(self) -> list[int]:
        """The processes it started (`harmony api --workers N` forks its workers)."""
        try:
            return [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []


TOKEN_KEY = "the-benchmarks-token-key-not-a-secret"  # the API children's: benchmarks sign their own tokens


def authorization(user_id: str) -> str:
    """The Authorization header value that lets a benchmark write as `user_id` to a child API."""
    from api.tokens import TokenSigner

    return f"Bearer {TokenSigner(TOKEN_KEY.encode(), 24 * 3600).issue(user_id)}"


def child_env(state_dir: Path, topic: str, partitions: int, store_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HARMONY_STATE_DIR": str(state_dir),
        "HARMONY_TOPIC": topic,
        "HARMONY_PARTITIONS": str(partitions),
        "HARMONY_STORE": f"sqlite:///{store_path}",
        "HARMONY_LOG_FORMAT": "json",
        "HARMONY_TOKEN_KEY": TOKEN_KEY,
    }
    for name in ("HARMONY_KAFKA_BOOTSTRAP", "HARMONY_S3_ENDPOINT"):  # use the bench stack, nothing else
        env.pop(name, None)
    # Children run in their own working directory: make them import this checkout's code.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    return env


def read_only_api(port: int, work: Path, store_path: Path, workers: int = 1) -> Child:
    """`harmony api` on a store that needs no broker: reads only, so the API is given an address nothing
    listens on (it retries in the background)."""
    env = child_env(work, "bench.reads", 6, store_path)
    env["HARMONY_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{free_port()}"
    return Child(["api", "--port", str(port), "--workers", str(workers)], env, work / f"api-{workers}.log", cwd=work)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CpuMeter:
    """CPU used by named processes (and this one) between start() and stop(), as cores busy on average."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def start(self) -> "CpuMeter":
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.before["bench (this process)"] = time.process_time()
        self.t0 = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.t0, 1e-9)
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["bench (this process)"] = time.process_time()
        result = {name: round((now[name] - before) / wall, 3) for name, before in self.before.items()
                  if before is not None and now[name] is not None}
        return {**result, "total": round(sum(result.values()), 3), "machine cores": os.cpu_count() or 0}


def catch_up(env: dict[str, str], work: Path, store, expected: int, timeout: float, services: dict[str, int],
             label: str, workers: int = 1, profile_dir: Path | None = None, poll: float = 0.05) -> dict:
    """`workers` `harmony worker` children in one group on `env`'s topic and store, polled through `store`
    until its checkpoint covers `expected` events: the rate from their start and from the first applied
    event (steady, `per_s`), the CPU of the workers and `services` over each, and the commits the store
    refused; with `profile_dir`, each worker's py-spy profile."""
    children: dict[str, Child] = {}
    spies: dict[str, PySpy] = {}
    figures: dict = {"workers": workers}
    try:
        for i in range(1, workers + 1):
            name = "worker" if workers == 1 else f"worker-{i}"
            (work / name).mkdir()  # cwd: Faust writes its `<app id>-data` folder into the working directory
            children[name] = Child(["worker"], env, work / f"{name}.log", cwd=work / name)
        if profile_dir:
            spies = {name: PySpy(c.pid, profile_dir, f"{work.name}-{name}") for name, c in children.items()}
        pids = {**{name: c.pid for name, c in children.items()}, **services}
        started = time.monotonic()
        meter, steady_meter = CpuMeter(pids).start(), None
        first_at = first_count = None
        applied = 0
        with progress() as bar:
            task = bar.add_task(label, total=expected, info="starting / joining the group")
            while applied < expected:
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{label}: {applied:,} of {expected:,} applied within {timeout:.0f}s")
                for child in children.values():
                    child.check(label)
                time.sleep(poll)
                applied = sum(offset + 1 for offset in store.checkpoint().values())
                now = time.monotonic()
                if applied and first_at is None:
                    first_at, first_count, steady_meter = now, applied, CpuMeter(pids).start()
                if first_at is not None:
                    rate = (applied - first_count) / max(now - first_at, 1e-9)
                    bar.update(task, completed=applied, info=f"{rate:,.0f}/s since the first apply")
        done = time.monotonic()
        steady = round((expected - first_count) / (done - first_at), 1) if first_count < expected else None
        figures |= {"per_s": steady, "events": expected, "first_apply_s": round(first_at - started, 2),
                    "events_at_first_apply": first_count, "total_s": round(done - started, 2),
                    "steady_s": round(done - first_at, 2), "per_s_from_start": round(expected / (done - started), 1),
                    "per_s_steady": steady, "cpu_cores": meter.stop(), "cpu_cores_steady": steady_meter.stop(),
                    # as the workers last reported them (every 2 s), per partition
                    "refused_commits_reported": sum(lag.refused for lag in store.lag())}
    finally:
        for name, spy in spies.items():
            figures.setdefault("profile", {})[name] = spy.stop()
        with console.status(f"{label}: stopping the workers…"):
            for child in children.values():
                child.stop()
    return figures


# -- synthetic reviews ---------------------------------------------------------------------


class Population:
    """Users and movies with long tails (Zipf-like weights), reproducible from a seed."""

    def __init__(self, users: int = 5000, movies: int = 2000, seed: int = 42):
        self.rng = random.Random(seed)
        self.users = [f"user-{i:05d}" for i in range(users)]
        self.movies = [f"movie-{i:05d}" for i in range(movies)]
        self._user_weights = list(itertools.accumulate(1 / (rank + 1) ** 0.6 for rank in range(users)))
        self._movie_weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(movies)))

    def pairs(self, n: int) -> list[tuple[str, str]]:
        users = self.rng.choices(self.users, cum_weights=self._user_weights, k=n)
        movies = self.rng.choices(self.movies, cum_weights=self._movie_weights, k=n)
        return list(zip(users, movies))

    def rating(self) -> float:
        return self.rng.randrange(1, 11) / 2

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def review_events(population: Population, n: int, source: str = "bench") -> list[tuple[bytes, bytes]]:
    """n encoded ReviewSubmitted events as (key, value) pairs, as the command handler would write them."""
    from events.codec import encode
    from events.types import ReviewSubmitted

    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    out = []
    for i, (user, movie) in enumerate(population.pairs(n)):
        reviewed = start + timedelta(seconds=i * 7)
        event = ReviewSubmitted(
            event_id=population.uuid(), occurred_at=reviewed, recorded_at=reviewed,
            user_id=user, movie_id=movie, rating=population.rating(),
            summary=f"summary {i}", text=f"A benchmark review, number {i}, of {movie} by {user}.",
            reviewed_at=reviewed, source=source,
        )
        out.append((user.encode(), encode(event)))
    return out


class SyntheticLog:
    """Events in log order, keyed into partitions as the producer would, to project straight into a store."""

    def __init__(self, partitions: int = 6):
        from projections.fold import Record

        self.record, self.offsets, self.records = Record, [0] * partitions, []
        self.at = datetime(2024, 1, 1, tzinfo=timezone.utc)  # one event a second from here

    def add(self, key: str, event) -> None:
        partition = zlib.crc32(key.encode()) % len(self.offsets)
        self.records.append(self.record(partition, self.offsets[partition], event))
        self.offsets[partition] += 1

    def catalogue(self, movie_id: str, title: str, year: int, genres) -> None:
        from events.types import MovieCatalogued

        at, n = self.next_time()
        self.add(f"movie:{movie_id}", MovieCatalogued(event_id=f"cat-{n}", occurred_at=at, recorded_at=at,
                                                      movie_id=movie_id, title=title, year=year, genres=tuple(genres)))

    def review(self, user: str, movie_id: str, rating: float, **text) -> None:
        from events.types import ReviewSubmitted

        at, n = self.next_time()
        self.add(user, ReviewSubmitted(event_id=f"rev-{n}", occurred_at=at, recorded_at=at, user_id=user,
                                       movie_id=movie_id, rating=rating, reviewed_at=at, source="bench", **text))

    def next_time(self) -> tuple[datetime, int]:
        return self.at + timedelta(seconds=len(self.records)), len(self.records)

    def project(self, path: Path, batch: int = 20_000) -> dict:
        """Apply the records to a new SQLite store at `path` as the projector does, in batches."""
        from projections.projector import apply_records

        store = sqlite_store(path)
        started = time.perf_counter()
        try:
            with progress() as bar:
                task = bar.add_task(f"project {len(self.records):,} events", total=len(self.records), info="")
                for at in range(0, len(self.records), batch):
                    apply_records(store, self.records[at:at + batch])
                    done = min(at + batch, len(self.records))
                    bar.update(task, completed=done, info=f"{done / (time.perf_counter() - started):,.0f}/s")
        finally:
            store.close()
        seconds = time.perf_counter() - started
        return {"projected_per_s": round(len(self.records) / seconds),
                "db_mib": round(sum(f.stat().st_size for f in path.parent.glob(path.name + "*")) / 2**20, 1)}


class MemoryBucket:
    """Just enough of an S3 client for `ml.registry.publish`: objects in a dict."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket, Key, Body, ContentType=None, **_):
        self.objects[f"{Bucket}/{Key}"] = bytes(Body)


# -- measuring ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def timings(seconds: list[float]) -> dict:
    """Count, p50, p99 and mean (ms) of some durations in seconds, and how many a second one after another."""
    ordered = sorted(seconds)
    return {"n": len(ordered), "p50_ms": round(percentile(ordered, 50) * 1000, 3),
            "p99_ms": round(percentile(ordered, 99) * 1000, 3), "mean_ms": round(sum(ordered) / len(ordered) * 1000, 3),
            "per_s": round(len(ordered) / sum(ordered), 1)}


def ratio(a: float | None, b: float | None, digits: int = 4) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, refresh_per_second=4, transient=False,
    )


async def produce_batched(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], *,
                          linger_ms: int, partitions: int | None = None, label: str = "produce") -> dict:
    """Send every message with one acks=all batching producer (to a topic of `partitions` made first, if
    given); answer the rate."""
    from aiokafka import AIOKafkaProducer

    if partitions:
        await create_topic(bootstrap, topic, partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, max_batch_size=1 << 20,
        request_timeout_ms=30_000,
    )
    await producer.start()
    done = 0

    def count(_future) -> None:
        nonlocal done
        done += 1

    try:
        with progress() as bar:
            task = bar.add_task(label, total=len(messages), info="")
            started = time.perf_counter()
            futures = []
            for key, value in messages:
                future = await producer.send(topic, value, key=key)
                future.add_done_callback(count)
                futures.append(future)
                if len(futures) % 5000 == 0:
                    bar.update(task, completed=done)
                    await asyncio.sleep(0)
            pending = asyncio.gather(*futures)
            while not pending.done():
                bar.update(task, completed=done, info=f"{done / (time.perf_counter() - started):,.0f}/s")
                await asyncio.wait([pending], timeout=0.25)
            await pending
            elapsed = time.perf_counter() - started
            bar.update(task, completed=done, info=f"{done / elapsed:,.0f}/s")
    finally:
        await producer.stop()
    return {"messages": len(messages), "seconds": round(elapsed, 3), "per_s": round(len(messages) / elapsed, 1),
            "linger_ms": linger_ms, "acks": "all"}


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from events.topic import TopicSpec, ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(topic, partitions)])


def fresh_topic(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


# -- output ---------------------------------------------------------------------------------


def flat(figures: dict, prefix: str = "") -> list[tuple[str, str]]:
    """The figures as rows of a table: nested names joined with dots, a dict of plain values on one row."""
    rows = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
            rows += flat(value, f"{name}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            rows += flat(dict(enumerate(value, 1)), f"{name}.")
        elif isinstance(value, dict):
            rows.append((name, ", ".join(f"{k} {v}" for k, v in value.items())))
        else:
            rows.append((name, f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool)
                         else str(value)))
    return rows


def run_benchmark(name: str, doc: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], dict]) -> int:
    """The main() of a benchmark: run it with the load average at its start and end (other work on the machine
    skews every figure); keep the figures in bench/results/<name>.json; a table of them on stdout (not with
    --json), then the one JSON object."""
    install_sigterm()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        figures = {"load_average_at_start": load_at_start, **run(args)}
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]: the stack was taken down")
        return 130
    figures |= {"load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count()}}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str))
    if not args.json:
        table = Table(title=doc.split("\n\n")[0].split(":")[0], show_header=True, header_style="bold")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for row in flat(figures):
            table.add_row(*row)
        Console(width=max(120, Console().width)).print(table)
    print(json.dumps(figures, default=str), flush=True)
    return 1 if figures.get("failed") else 0


class PySpy:
    """`py-spy record` attached to a process; stop() ends it (on SIGINT it writes its stacks) and summarises
    them: the share of samples (%) by package of the leaf frame, and the top functions by self time."""

    def __init__(self, pid: int, out_dir: Path, name: str):
        binary = shutil.which("py-spy", path=sysconfig.get_path("scripts")) or shutil.which("py-spy")
        if not binary:
            raise SystemExit("--profile-dir needs py-spy: .venv/bin/pip install py-spy")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / f"{name}.collapsed.txt"
        with open(out_dir / f"{name}.py-spy.log", "ab") as out:
            self.process = subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
                 "--output", str(self.path)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self, top: int = 15) -> dict:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(30)
        packages: Counter = Counter()
        functions: Counter = Counter()
        lines = self.path.read_text(errors="replace").splitlines() if self.path.exists() else []
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                # 'func (/usr/lib/python3.12/asyncio/events.py:12)'; installed packages' files are named
                # relative to sys.path ('aiokafka/producer/sender.py')
                function, _, where = stack.rpartition(";")[2].partition(" (")
                parts = where.rstrip(")").split("/")
                packages[parts[-2] if where.startswith("/") and len(parts) > 1 else parts[0] or "?"] += int(count)
                functions[f"{function} ({'/'.join(parts[-2:])})"] += int(count)
        total = sum(packages.values())
        if not total:
            return {"error": f"no samples in {self.path}"}
        return {"samples": total, "stacks": str(self.path),
                **{key: {name: round(100 * n / total, 1) for name, n in counter.most_common(top)}
                   for key, counter in (("packages_pct", packages), ("top_self_pct", functions))}}
