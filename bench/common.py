"""Shared pieces of the benchmarks: a throwaway local stack, child services, CPU accounting,
synthetic reviews, output (rich progress on stderr, figures and one JSON object on stdout)
and an optional py-spy profile summary."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Progress and diagnostics go to stderr; stdout carries only the figures (and, with --json, only JSON).
console = Console(stderr=True)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the benchmark topics (6)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory (logs, data)")
    parser.add_argument(
        "--profile-dir", type=Path, default=None,
        help="profile the service under test with py-spy (must be installed) and write its stacks here",
    )
    return parser


def add_backlog_arguments(parser: argparse.ArgumentParser) -> None:
    """The backlog a catch-up benchmark projects: its size, shape and how it is produced."""
    parser.add_argument("--events", type=int, default=200_000, help="events in the backlog (200000)")
    parser.add_argument("--users", type=int, default=5000, help="distinct users (5000)")
    parser.add_argument("--movies", type=int, default=2000, help="distinct movies (2000)")
    parser.add_argument("--linger-ms", type=int, default=50, help="linger of the producer filling the topics (50)")


def install_sigterm() -> None:
    """SIGTERM ends the benchmark like Ctrl-C, so the stack is still taken down."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


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


# -- the stack and child processes ------------------------------------------------------


@contextlib.contextmanager
def local_stack(name: str, topic: str, partitions: int, keep: bool = False) -> Iterator[tuple[Path, dict]]:
    """A fresh local stack in a temporary state directory; always taken down (and removed) afterwards."""
    from harmony import stack

    directory = Path(tempfile.mkdtemp(prefix=f"harmony-bench-{name}-"))
    try:
        started = time.monotonic()
        with console.status("starting the local stack (SeaweedFS + Kafka)…"):
            info = stack.up(directory, topic, partitions)
        console.log(
            f"stack up in {time.monotonic() - started:.1f}s: kafka {info['kafka_bootstrap']}, "
            f"s3 {info['s3_endpoint']}, state {directory}"
        )
        yield directory, info
    finally:
        with uninterrupted(), console.status("stopping the local stack…"):
            stack.down(directory)
            if keep:
                console.log(f"kept state directory {directory}")
            else:
                shutil.rmtree(directory, ignore_errors=True)


def sqlite_store(path: Path):
    """A SQLite projection store at `path`, built by the composition root as the product builds it."""
    import dataclasses

    from harmony import bootstrap
    from harmony.settings import load

    return bootstrap.store(dataclasses.replace(load(), store_url=f"sqlite:///{path}"))


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


class Child:
    """A `python -m harmony …` child process (or `python -m <module> …`) with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None,
                 module: str = "harmony"):
        self.log_path = log_path
        self.started = time.monotonic()
        with open(log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, *args], env=env, cwd=cwd,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        with uninterrupted():
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CpuMeter:
    """CPU used by named processes between start() and stop(), as cores busy on average."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self._before: dict[str, float | None] = {}
        self._self_before = 0.0
        self._t0 = 0.0
        self.result: dict[str, float] = {}

    def start(self) -> "CpuMeter":
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._self_before = time.process_time()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        result = {}
        for name, pid in self.pids.items():
            now, before = cpu_seconds(pid), self._before.get(name)
            if now is not None and before is not None:
                result[name] = round((now - before) / wall, 3)
        result["bench (this process)"] = round((time.process_time() - self._self_before) / wall, 3)
        result["total"] = round(sum(result.values()), 3)
        result["machine cores"] = os.cpu_count() or 0
        self.result = result
        return result


# -- synthetic reviews ---------------------------------------------------------------------


class Population:
    """~5k users × ~2k movies with long tails (Zipf-like weights), reproducible from a seed."""

    def __init__(self, users: int = 5000, movies: int = 2000, seed: int = 42,
                 user_skew: float = 0.6, movie_skew: float = 1.0):
        self.rng = random.Random(seed)
        self.users = [f"user-{i:05d}" for i in range(users)]
        self.movies = [f"movie-{i:05d}" for i in range(movies)]
        self._user_weights = _cumulative([1 / (rank + 1) ** user_skew for rank in range(users)])
        self._movie_weights = _cumulative([1 / (rank + 1) ** movie_skew for rank in range(movies)])

    def pairs(self, n: int) -> list[tuple[str, str]]:
        users = self.rng.choices(self.users, cum_weights=self._user_weights, k=n)
        movies = self.rng.choices(self.movies, cum_weights=self._movie_weights, k=n)
        return list(zip(users, movies))

    def rating(self) -> float:
        return self.rng.randrange(1, 11) / 2

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


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


# -- measuring ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, refresh_per_second=4, transient=False,
    )


async def produce_batched(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], *,
                          linger_ms: int, batch_bytes: int = 1 << 20, label: str = "produce") -> dict:
    """Send every message with one acks=all batching producer; answer the rate."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, max_batch_size=batch_bytes,
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


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """The figures as a table on stdout."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console(width=max(120, Console().width)).print(table)


RESULTS_DIR = PROJECT_ROOT / "bench" / "results"  # ignored by git


def save(name: str, figures: dict) -> Path:
    """Keep the latest figures in bench/results/<name>.json, stamped with the time and machine."""
    figures.setdefault("recorded_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    figures.setdefault("machine", {"cpus": os.cpu_count()})
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, default=str))
    return path


def report(name: str, title: str, rows: list[tuple[str, str]], figures: dict, as_json: bool) -> None:
    """Save the figures; a table on stdout (not with --json), then the one JSON object."""
    path = save(name, figures)
    if not as_json:
        print_table(title, rows)
        console.log(f"figures saved to {path}")
    print(json.dumps(figures, default=str), flush=True)


# -- py-spy ----------------------------------------------------------------------------------


def run_benchmark(name: str, title: str, args, run, rows) -> int:
    """The main() of an in-process benchmark: run it, then print and save its figures."""
    install_sigterm()
    try:
        figures = run(args)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]: the stack was taken down")
        return 130
    report(name, title, rows(figures), figures, args.json)
    return 0


def py_spy_binary() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "py-spy"
    found = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile-dir needs py-spy: .venv/bin/pip install py-spy")
    return found


class PySpy:
    """`py-spy record` attached to a PID, stopped with SIGINT (which makes it write its output)."""

    def __init__(self, pid: int, out_dir: Path, name: str, rate: int = 200, native: bool = False):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / f"{name}.collapsed.txt"
        self.log_path = out_dir / f"{name}.py-spy.log"
        args = [py_spy_binary(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                "--nonblocking", "--output", str(self.path)]
        if native:
            args.append("--native")
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> Path:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.path


def summarise_stacks(path: Path, categories: dict[str, tuple[str, ...]], top: int = 15) -> dict:
    """Summarise py-spy collapsed stacks: share of samples per category (first match walking from the
    leaf up), plus the top functions by self and by inclusive samples."""
    total = 0
    self_counts: Counter = Counter()
    inclusive: Counter = Counter()
    by_category: Counter = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_counts[_short(frames[-1])] += count
        for frame in set(_short(f) for f in frames):
            inclusive[frame] += count
        category = "other"
        for frame in reversed(frames):
            hit = next((name for name, needles in categories.items() if any(n in frame for n in needles)), None)
            if hit:
                category = hit
                break
        by_category[category] += count
    if not total:
        return {"error": "no samples"}

    def share(counter: Counter, n: int | None = None) -> dict[str, float]:
        return {name: round(100 * c / total, 1) for name, c in counter.most_common(n)}

    return {"samples": total, "categories_pct": share(by_category),
            "top_self_pct": share(self_counts, top), "top_inclusive_pct": share(inclusive, top * 2)}


def _short(frame: str) -> str:
    """'func (/long/path/pkg/mod.py:12)' -> 'func (pkg/mod.py:12)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def print_profile(title: str, summary: dict) -> None:
    if "error" in summary:
        console.log(f"{title}: {summary['error']}")
        return
    _print_shares(f"{title} ({summary['samples']:,} samples)", "where", "% of samples", summary["categories_pct"])
    _print_shares(f"{title}: top functions by self time", "function", "% self", summary["top_self_pct"])


def _print_shares(title: str, label: str, unit: str, shares: dict) -> None:
    table = Table(title=title)
    table.add_column(label)
    table.add_column(unit, justify="right")
    for name, pct in shares.items():
        table.add_row(name, f"{pct}")
    console.print(table)


def merge_categories(*groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    merged: dict[str, tuple[str, ...]] = defaultdict(tuple)
    for group in groups:
        for name, needles in group.items():
            merged[name] = merged[name] + needles
    return dict(merged)
