"""Three Kafka brokers on loopback: SIGKILL the broker leading the most review partitions under a
steady POST load. Every POST answers 202 or a fast 503; the API, the worker and the archiver carry
on by themselves; retries of the 503s are applied once; the killed broker, restarted, rejoins."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from harmony import bootstrap, stack as launcher
from tests.conftest import PARTITIONS, stop_in_background, wait_until
from tests.integration.helpers import log_end

pytestmark = pytest.mark.integration

APPEND_TIMEOUT = 3.0
LOAD_SECONDS = 14.0
KILL_AT = 3.0


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory):
    """This module's stack: SeaweedFS and three brokers (replication 3, min.insync.replicas 2)."""
    directory = tmp_path_factory.mktemp("cluster")
    info = launcher.up(directory, "harmony.reviews", PARTITIONS, brokers=3)
    assert [name for name in info["services"] if name.startswith("kafka-")] == ["kafka-1", "kafka-2", "kafka-3"]
    yield directory
    stop_in_background(directory)


async def _describe(bootstrap: str, topic: str) -> tuple[list[int], list[dict]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        brokers = [b["node_id"] for b in (await admin.describe_cluster())["brokers"]]
        return sorted(brokers), (await admin.describe_topics([topic]))[0]["partitions"]
    finally:
        await admin.close()


def describe(bootstrap: str, topic: str) -> tuple[list[int], list[dict]]:
    return asyncio.run(_describe(bootstrap, topic))


class Load:
    """POSTs with unique reviews and Idempotency-Keys from a few threads, each answer recorded."""

    def __init__(self, base_url: str, bearer, threads: int = 6):
        self.base_url, self.bearer, self.threads = base_url, bearer, threads
        self.answers: list[dict] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def body(self) -> tuple[str, dict]:
        n = uuid.uuid4().hex
        return n, {"user_id": f"u{n[:2]}", "movie_id": f"m{n}", "rating": 4.5}

    def post(self, client: httpx.Client, key: str, body: dict) -> dict:
        started = time.monotonic()
        try:
            response = client.post("/v1/reviews", json=body,
                                   headers={**self.bearer(body["user_id"]), "Idempotency-Key": key})
            status, answer = response.status_code, response.json()
            retry_after = response.headers.get("retry-after")
        except httpx.HTTPError as error:
            status, answer, retry_after = repr(error), {}, None
        return {"key": key, "body": body, "status": status, "answer": answer, "retry_after": retry_after,
                "started": started, "seconds": time.monotonic() - started}

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                record = self.post(client, *self.body())
                with self._lock:
                    self.answers.append(record)

    def run_for(self, seconds: float, during) -> None:
        """Load for `seconds`, running `during()` meanwhile in this thread."""
        deadline = time.monotonic() + seconds
        workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            during()
            time.sleep(max(0.0, deadline - time.monotonic()))
        finally:
            self._stop.set()
            for worker in workers:
                worker.join()


def test_killing_the_busiest_leader_loses_nothing(settings, api, start_worker, services, stack_dir, tmp_path,
                                                  bearer):
    start_worker()
    archiver = services("archiver")
    wait_until(lambda: "archiver lag" in archiver.log(), 60, f"archiver started: {archiver.log()[-1500:]}")
    load = Load(str(api.base_url), bearer)
    killed: dict = {}

    def kill_busiest_leader():
        time.sleep(KILL_AT)
        _, partitions = describe(settings.kafka_bootstrap, settings.topic)
        node = Counter(p["leader"] for p in partitions).most_common(1)[0][0]
        pid = launcher.status(stack_dir)["services"][f"kafka-{node}"]["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.update(node=node, at=time.monotonic())

    load.run_for(LOAD_SECONDS, during=kill_busiest_leader)
    answers = load.answers

    statuses = Counter(a["status"] for a in answers)
    print(f"broker {killed['node']} killed; answers {dict(statuses)}; slowest "
          f"{max(a['seconds'] for a in answers):.2f}s; first 202 after the kill at "
          f"{min((a['started'] + a['seconds'] - killed['at'] for a in answers if a['status'] == 202 and a['started'] > killed['at']), default=-1):.2f}s")
    assert set(statuses) <= {202, 503}, f"answers other than 202 and 503: {statuses}"
    slowest = max(a["seconds"] for a in answers)
    assert slowest < APPEND_TIMEOUT + 1.5, f"a POST waited {slowest:.1f}s (append timeout {APPEND_TIMEOUT}s)"
    assert all(a["retry_after"] for a in answers if a["status"] == 503)
    recovered = [a for a in answers if a["status"] == 202 and a["started"] > killed["at"] + 1]
    assert recovered, f"no POST was accepted after the kill without anyone acting: {statuses}"

    # The killed broker, restarted, rejoins: registered again and back in every partition's ISR.
    info = launcher.up(stack_dir, settings.topic, PARTITIONS)
    assert info["running"]

    def rejoined():
        brokers, partitions = describe(settings.kafka_bootstrap, settings.topic)
        return brokers == [1, 2, 3] and all(killed["node"] in p["isr"] for p in partitions)

    wait_until(rejoined, 90, f"broker {killed['node']} rejoined the cluster", interval=1)

    # Retries of the 503s, with their keys, until accepted.
    with httpx.Client(base_url=str(api.base_url), timeout=30) as client:
        retried = []
        for answer in answers:
            if answer["status"] == 503:
                again = wait_until(
                    lambda: (r := load.post(client, answer["key"], answer["body"]))["status"] == 202 and r,
                    60, "a retry of a 503 was accepted", interval=0.5)
                retried.append(again)
    accepted = [a for a in answers if a["status"] == 202] + retried
    event_ids = {a["answer"]["event_id"] for a in accepted}
    assert len(event_ids) == len(accepted), "every review has its own event id"

    # Every accepted event is in the projection exactly once; movie statistics counted it once.
    db = settings.store_url.removeprefix("sqlite:///")

    def projected() -> set[str]:
        with sqlite3.connect(db) as connection:
            return {row[0] for row in connection.execute("SELECT event_id FROM history")}

    wait_until(lambda: event_ids <= projected(), 120, "every accepted event projected", interval=1)
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM history").fetchone()[0] == len(event_ids)
        assert connection.execute("SELECT count(*) FROM reviews").fetchone()[0] == len(event_ids)
    movies = {a["body"]["movie_id"] for a in accepted}  # derived statistics count each review once
    store = bootstrap.store(settings)
    assert sum(store.movie(movie).review_count for movie in movies) == len(event_ids)
    store.close()

    # The idempotent producer adds no copy of its own: a duplicate in the log can only come from an
    # append that answered 503 and was retried by the client (an Idempotency-Key keeps its event id).
    in_log = sum(log_end(settings.kafka_bootstrap, settings.topic).values())
    print(f"{len(event_ids)} accepted event ids, {in_log} records in the log")
    assert len(event_ids) <= in_log <= len(event_ids) + statuses[503]

    # The archive holds exactly the log, and the projection equals a fold of it.
    def verified():
        done = subprocess.run([sys.executable, "-m", "harmony", "verify", "--json"], env={**os.environ},
                              capture_output=True, text=True, timeout=120)
        return done.returncode == 0 and json.loads(done.stdout)

    wait_until(verified, 120, f"harmony verify passes: {archiver.log()[-1500:]}", interval=3)
