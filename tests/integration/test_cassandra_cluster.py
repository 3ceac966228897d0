"""Three Apache Cassandra nodes, replication factor 3, LOCAL_QUORUM: SIGKILL one node while the projector
writes a stream; the projection goes on (two of three replicas answer every read and write, and a majority
the checkpoint's compare-and-set); after the node returns, the views equal a fold of the log."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import pytest
from cassandra import DriverException
from cassandra.protocol import ErrorMessage

from harmony import bootstrap
from harmony import stack as launcher
from harmony.settings import load
from tests.conftest import PARTITIONS, Service, stop_in_background, use_environment, wait_until
from tests.integration.helpers import applied, fold_of_log, produce_events, review_stream
from tests.reference_fold import assert_same

pytestmark = [pytest.mark.integration, pytest.mark.cassandra]

NODES = 3
KILLED = "cassandra-1"  # 127.0.0.1: the first contact point of the URL
# The stream: in the log before the worker starts; produced in steps around the kill; after the node returns.
BEFORE, WHILE_DOWN, AFTER = 4_000, 4_000, 2_000
STEPS = 8  # WHILE_DOWN arrives in this many steps, half a second apart; the node is killed after the first
TOTAL = BEFORE + WHILE_DOWN + AFTER
# Times the worker may exit (and be started again, as its supervisor would) in one run. The worker is
# crash-only: a store request that still fails after its retry (a write timing out twice on a busy
# machine) exits it with 70, and the next process goes on from the store's checkpoint. With commits
# that survive contention, runs here needed none; the allowance is for a loaded CI machine.
RESTARTS = 2
POLL = 0.5  # seconds between checkpoint reads (each a read of the store, as the API's would be)


def _up(directory) -> dict:
    return launcher.up(directory, "harmony.reviews", PARTITIONS, cassandra_nodes=NODES,
                       cassandra_heap=load().cassandra_heap)


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory):
    """A stack of its own (SeaweedFS, Kafka) with three Cassandra nodes on 127.0.0.1-3, stopped afterwards."""
    directory = tmp_path_factory.mktemp("cassandra3")
    try:
        _up(directory)
        yield directory
    finally:
        stop_in_background(directory)


@pytest.fixture
def cluster_env(cluster_dir, monkeypatch) -> dict[str, str]:
    """A fresh topic and a fresh keyspace (RF 3, LOCAL_QUORUM) on the cluster; also applied to this process."""
    url = launcher.status(cluster_dir)["cassandra"]["url"]
    assert url.endswith(f"/{launcher.CASSANDRA_KEYSPACE}"), url
    store = launcher.keyspace_url(url, f"cluster_{uuid.uuid4().hex[:12]}")
    return use_environment(monkeypatch, cluster_dir, store, HARMONY_CASSANDRA_REPLICATION=str(NODES),
                           HARMONY_CASSANDRA_CONSISTENCY="LOCAL_QUORUM")


class SupervisedWorker:
    """`harmony worker`, started again whenever it exits, at most `restarts` times; every exit is kept
    with its reason (the last line of the worker's critical log record)."""

    def __init__(self, env: dict[str, str], directory, restarts: int):
        self.env, self.directory, self.restarts = env, directory, restarts
        self.exits: list[str] = []
        self.current = self._start()

    def _start(self) -> Service:
        return Service(["worker"], self.env, self.directory / f"worker.{len(self.exits)}.log").start()

    def check(self) -> None:
        code = self.current.process.poll()
        if code is None:
            return
        self.exits.append(f"exit {code}: {_reason(self.current.log())}")
        assert len(self.exits) <= self.restarts, f"the worker exited {len(self.exits)} times: {self.exits}"
        self.current = self._start()

    def stop(self) -> None:
        self.current.stop()


def _reason(log: str) -> str:
    for line in reversed(log.splitlines()):
        if '"critical"' in line:
            try:
                return json.loads(line)["exc"].strip().splitlines()[-1][:400]
            except (ValueError, KeyError, IndexError):
                return line[-400:]
    return log[-400:]


class Applied:
    """The records the store has applied, read through the port as the API's read-your-writes reads them.
    A read that fails is kept (and answers -1): the test watches progress, the explicit reads assert."""

    def __init__(self, store):
        self.store = store
        self.errors: list[str] = []
        self.last = -1  # the last count read

    def __call__(self) -> int:
        try:
            self.last = applied(self.store)
            return self.last
        except (DriverException, ErrorMessage) as error:
            self.errors.append(f"{type(error).__name__}: {error}"[:400])
            return -1


def _until(count: Applied, target: int, timeout: float, what: str, worker: SupervisedWorker) -> int:
    """Wait until `count` reaches `target`, starting the worker again whenever it exits."""
    def done() -> bool:
        worker.check()
        return count() >= target

    try:
        wait_until(done, timeout, what, POLL)
    except AssertionError as error:
        raise AssertionError(
            f"{error} (applied {count.last}); worker exits: {worker.exits}; failed checkpoint reads: "
            f"{len(count.errors)} {count.errors[-3:]}; the worker's last output:\n{worker.current.log()[-3000:]}"
        ) from None
    return count.last


def _in_steps(settings, events: list, first: threading.Event) -> None:
    size = -(-len(events) // STEPS)
    for start in range(0, len(events), size):
        produce_events(settings.kafka_bootstrap, settings.topic, events[start:start + size])
        first.set()
        time.sleep(0.5)


def test_a_node_sigkilled_mid_stream_projection_goes_on_then_views_equal_fold_of_log(
    cluster_dir, cluster_env, tmp_path
):
    settings = load()
    events = review_stream(TOTAL, seed=31, catalogue=0.05)
    live = bootstrap.store(settings)
    count = Applied(live)
    worker = late = None
    try:
        produce_events(settings.kafka_bootstrap, settings.topic, events[:BEFORE])
        worker = SupervisedWorker(cluster_env, tmp_path, RESTARTS)
        _until(count, 1_000, 120, "the worker applies 1,000 records", worker)

        # SIGKILL a node while the projector writes a stream that goes on arriving.
        first = threading.Event()
        late = threading.Thread(target=_in_steps, args=(settings, events[BEFORE:BEFORE + WHILE_DOWN], first))
        late.start()
        assert first.wait(60), "the first step of the stream was not produced"
        pid = launcher.status(cluster_dir)["services"][KILLED]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not launcher._alive(pid), 30, f"{KILLED} (pid {pid}) dies")
        at_kill = count()
        late.join()

        # One node down: the projection goes on through everything in the log, and reads at LOCAL_QUORUM answer.
        assert _until(count, BEFORE + WHILE_DOWN, 150,
                      f"all {BEFORE + WHILE_DOWN} records applied with {KILLED} down (from {at_kill})",
                      worker) == BEFORE + WHILE_DOWN
        status = launcher.status(cluster_dir)
        assert not status["services"][KILLED]["alive"], f"{KILLED} came back before the test restarted it"
        assert live.lag(), "the lag view answers with a node down"
        assert any(live.user_reviews(f"u{user}", 5, None) for user in range(10)), "reviews answer with a node down"

        # The node returns (`up` starts only what died); the rest of the stream is projected with it back.
        others = {name: service["pid"] for name, service in status["services"].items() if name != KILLED}
        back = _up(cluster_dir)
        assert back["running"] and back["services"][KILLED]["alive"], f"{KILLED} did not come back: {back}"
        assert {name: service["pid"] for name, service in back["services"].items() if name != KILLED} == others, \
            f"restarting {KILLED} restarted other services too"
        produce_events(settings.kafka_bootstrap, settings.topic, events[BEFORE + WHILE_DOWN:])
        assert _until(count, TOTAL, 150, f"all {TOTAL} records applied with {KILLED} back", worker) == TOTAL
        worker.stop()

        views, expected = live.contents(), fold_of_log(settings.kafka_bootstrap, settings.topic)
    finally:
        if worker is not None:
            worker.stop()
        if late is not None:
            late.join()
        live.close()
    assert_same(views, expected)
    # Retractions and re-sent duplicates in the mix: the reviews view is not trivially the log.
    assert 0 < len(expected.reviews) < TOTAL and expected.movies
