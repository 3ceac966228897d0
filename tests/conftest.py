"""Shared fixtures. Integration tests run against the real local stack (Apache Kafka and SeaweedFS),
started once per session on free loopback ports in a temporary state directory.
Each test gets its own topic and store, so tests do not see each other's events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx
import pytest

from events.topic import ensure_topics, review_topics
from harmony import stack as launcher
from harmony.settings import load
from harmony.supervisor import Process

PARTITIONS = 4

# Every JVM the tests start (Kafka, Cassandra, Spark) compiles with C1 only: they live for minutes on small
# data, and C2 kept a core busy compiling Cassandra for its first minute (0.2-0.8 of a core, more than its
# requests). The benchmarks keep the JVMs' defaults.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")


class Service(Process):
    """A `harmony` subcommand run as a child process, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        super().__init__([sys.executable, "-m", "harmony", *args], log_path, env)
        self.args = args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, message: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s: {message}")


@pytest.fixture(autouse=True)
def logging_as_found():
    """Each test leaves the root logger as it found it: a CLI run in process (`main([...])`) points it
    at that test's captured stderr, which is closed after the test, and a later record (a stack stopping
    in the background) printed a "Logging error" traceback under the last test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


_stopping: list[threading.Thread] = []  # stacks stopping in the background


def stop_in_background(directory: Path) -> None:
    """Stop a stack the tests are done with while the next tests run: SeaweedFS takes about 15 s to exit
    on SIGTERM (its filer's graceful stop). pytest_sessionfinish waits for every one."""
    thread = threading.Thread(target=launcher.down, args=(directory,), name=f"stopping {directory.name}")
    thread.start()
    _stopping.append(thread)


# Session fixtures that start a JVM or build a site: under `make test`'s two xdist workers (`--dist loadgroup`)
# the tests using one are grouped into one worker, so it starts once rather than once per worker.
SHARED_ONCE = ("cassandra_node", "site", "spark_cluster", "spark")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        session_fixtures = {name for name, defs in item._fixtureinfo.name2fixturedefs.items()
                            if defs[-1].scope == "session"}
        needs = "cassandra_node" if item.get_closest_marker("cassandra") else next(
            (name for name in SHARED_ONCE if name in session_fixtures), None)
        if needs:
            item.add_marker(pytest.mark.xdist_group(needs))


def pytest_sessionfinish(session, exitstatus):
    for thread in _stopping:
        thread.join()


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("stack")
    launcher.up(directory, "harmony.reviews", PARTITIONS)
    yield directory
    stop_in_background(directory)


class KeyspaceDropper:
    """Drops the keyspaces tests are done with, one after another in a thread of its own, over one
    connection kept for the session: the next test need not wait for a drop (1-2 s each), nor for a
    new driver to connect and read the node's whole schema."""

    def __init__(self, node: dict):
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import RoundRobinPolicy

        profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=120)
        self._cluster = Cluster(node["contact_points"], port=node["port"], schema_metadata_enabled=False,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        self._session = self._cluster.connect()
        self._pending: list[concurrent.futures.Future] = []
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dropping keyspaces")

    def drop(self, keyspace: str) -> None:
        """Drop the keyspace and those named after it (its rebuilds', its key store's)."""
        self._pending.append(self._thread.submit(self._drop, keyspace))

    def _drop(self, keyspace: str) -> None:
        for (name,) in self._session.execute("SELECT keyspace_name FROM system_schema.keyspaces"):
            if name == keyspace or name.startswith(f"{keyspace}_"):
                self._session.execute(f"DROP KEYSPACE IF EXISTS {name}")

    def close(self) -> None:
        """Wait for every drop (a failed one fails the session here), then disconnect."""
        try:
            for dropping in self._pending:
                dropping.result()
        finally:
            self._thread.shutdown()
            self._cluster.shutdown()


@pytest.fixture(scope="session")
def cassandra_node(tmp_path_factory) -> dict:
    """One Apache Cassandra node for the whole session, started by the launcher in a state dir of its own (with
    its own SeaweedFS and Kafka: test_restart takes the session stack down and up without Cassandra).
    Yields stack.json's "cassandra": {"contact_points": ["127.0.0.1"], "port": N,
    "url": "cassandra://127.0.0.1:N/harmony"}; no keyspace is created. Stopped at the end of the session."""
    directory = tmp_path_factory.mktemp("cassandra")
    # Schema changes unflushed (`unsafesystem`): a store's ~25 tables made in about 1 s instead of 3, and the
    # node ready sooner. Safe here only: this node is never killed, and a node killed with it loses the
    # tables made since its last clean stop (the three-node cluster's test, which kills nodes, goes without).
    info = launcher.up(directory, "harmony.reviews", PARTITIONS, cassandra_nodes=1,
                       cassandra_heap=load().cassandra_heap, cassandra_options=("-Dcassandra.unsafesystem=true",))
    yield info["cassandra"]
    stop_in_background(directory)


@pytest.fixture(scope="session")
def keyspace_dropper(cassandra_node) -> KeyspaceDropper:
    """Drops the keyspaces of tests that are done with them (see KeyspaceDropper)."""
    dropper = KeyspaceDropper(cassandra_node)
    yield dropper
    dropper.close()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory) -> Path:
    """A Spark standalone master and one worker offering 1 GiB to executors, started by the launcher as
    `harmony stack up --spark-workers 1` does, in a state dir of its own with its own SeaweedFS and Kafka
    (test_spark_cluster kills, repairs and stops its services). Yields the state dir; stopped at the end
    of the session."""
    directory = tmp_path_factory.mktemp("spark")
    launcher.up(directory, "harmony.reviews", PARTITIONS, spark_workers=1, spark_memory="1g")
    yield directory
    stop_in_background(directory)


# Runs a test once on each projection store: `@BOTH_STORES` before a test that uses `env`.
BOTH_STORES = pytest.mark.parametrize("store_kind", ["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)])


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
def store_url(store_kind, tmp_path, request):
    """A fresh, empty projection store of `store_kind`: a SQLite file, or a keyspace on the session's
    Cassandra node (dropped afterwards with the keyspaces rebuilds swapped in)."""
    if store_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'projections.db'}"
        return
    node = request.getfixturevalue("cassandra_node")
    dropper = request.getfixturevalue("keyspace_dropper")
    keyspace = f"t_{uuid.uuid4().hex[:12]}"
    yield launcher.keyspace_url(node["url"], keyspace)
    dropper.drop(keyspace)


@pytest.fixture
def env(stack_dir, store_url, monkeypatch) -> dict[str, str]:
    """An environment naming the session's stack, a fresh topic and a fresh store; also applied to this process."""
    return use_environment(monkeypatch, stack_dir, store_url)


def use_environment(monkeypatch, stack_dir: Path, store_url: str, **more: str) -> dict[str, str]:
    """Name the stack in `stack_dir`, a fresh topic (created) and the store, plus `more` settings,
    in this process's environment; answer the environment for child processes."""
    topic = f"test.{uuid.uuid4().hex[:12]}"
    values = {
        "HARMONY_STATE_DIR": str(stack_dir),
        "HARMONY_TOPIC": topic,
        "HARMONY_PARTITIONS": str(PARTITIONS),
        "HARMONY_STORE": store_url,
        # A key store per test, as a store: a user one test forgets is no one's in the next.
        "HARMONY_KEY_STORE": f"sqlite:///{stack_dir / 'keys' / topic}.db",
        "HARMONY_LOG_FORMAT": "json",
        **more,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load()
    asyncio.run(ensure_topics(settings.kafka_bootstrap, review_topics(settings.topic, PARTITIONS)))
    return {**os.environ, **values}


@pytest.fixture
def settings(env):
    return load()


@pytest.fixture
def bearer(settings):
    """user id -> headers that let a request to the test's API write as that user: a token signed
    with the stack's key, like the one POST /v1/tokens gives the user's account."""
    from harmony import bootstrap

    signer = bootstrap.token_signer(settings)
    return lambda user_id: {"Authorization": f"Bearer {signer.issue(user_id)}"}


@pytest.fixture
def live_store(settings):
    """The test's projection store, opened as the services open it."""
    from harmony import bootstrap

    store = bootstrap.store(settings)
    yield store
    store.close()


@pytest.fixture
def services(env, tmp_path):
    """Start `harmony worker` / `harmony api` children; all are stopped after the test."""
    started: list[Service] = []

    def start(*args: str) -> Service:
        name = "-".join(args)[:40]
        service = Service(list(args), env, tmp_path / f"{name}.{len(started)}.log").start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def api(services):
    """A running API process; answers an httpx client bound to it."""
    _, client = serving(services)
    yield client
    client.close()


def serving(start: Callable[..., Service]) -> tuple[Service, httpx.Client]:
    """`harmony api` on a free port, started by `start(*args)` (the `services` fixture, or another
    environment's), once it is ready, and a client bound to it."""
    port = free_port()
    service = start("api", "--port", str(port))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15)
    # 60 s: on Cassandra the first process to open a test's fresh keyspace creates its tables, which
    # took over 30 s once in a full suite run.
    try:
        wait_until(lambda: _ready(client), 60, "API not ready")
    except AssertionError as error:  # the log as it is at the timeout, not as it was at the start
        raise AssertionError(f"{error}: {service.log()[-2000:]}") from None
    return service, client


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def start_worker(services, settings):
    """Start a projection worker and wait until it has joined the group and reported lag."""
    from harmony import bootstrap

    def start() -> Service:
        store = bootstrap.store(settings)
        before = {lag.partition: lag for lag in store.lag()}
        service = services("worker")

        def reporting():
            now = store.lag()
            return len(now) == PARTITIONS and any(lag != before.get(lag.partition) for lag in now)

        wait_until(reporting, 60, f"worker never reported lag: {service.log()[-2000:]}")
        store.close()
        return service

    return start


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local Spark session for every test that needs one (it takes seconds to start)."""
    from ml.spark import session

    return session("local[2]", "2g", checkpoint_dir=tmp_path_factory.mktemp("spark-checkpoints"))
