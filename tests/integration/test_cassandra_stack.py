"""Apache Cassandra in the local stack: `harmony stack up --cassandra` adds a node to a running stack, the
Python driver reads and writes through it, `status --json` lists it, `down` stops it (rows kept for the next
`up --cassandra`, on the same port), and a plain `up` restarts a SIGKILLed node. Also the session's
`cassandra_node` fixture."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import RoundRobinPolicy

from harmony import stack as launcher
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cassandra]

ROWS = 500


def harmony(*args: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "harmony", *args, "--json"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0 or args[-1] in ("down", "status"), done.stderr
    return json.loads(done.stdout)


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))


def cql(cassandra: dict, *statements: str, insert: str = "", rows: list[tuple] = ()) -> list:
    """Run statements through the driver, connected to the stack's contact points, then `insert` (prepared)
    for each of `rows`; answer the last statement's rows."""
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=30)
    cluster = Cluster(cassandra["contact_points"], port=cassandra["port"], protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        session = cluster.connect()
        answer = []
        for statement in statements:
            answer = list(session.execute(statement))
        if insert:
            execute_concurrent_with_args(session, session.prepare(insert), rows, concurrency=32,
                                         raise_on_first_error=True)
        return answer
    finally:
        cluster.shutdown()


def test_cassandra_joins_a_running_stack_serves_cql_stops_restarts_and_is_repaired(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "HARMONY_STATE_DIR": str(state), "HARMONY_LOG_FORMAT": "json"}
    figures = {}
    try:
        first = harmony("stack", "up", env=env)
        assert "cassandra" not in first and "cassandra-1" not in first["services"]
        began = time.monotonic()
        info = harmony("stack", "up", "--cassandra", env=env)
        figures["added to a running stack"] = time.monotonic() - began
        # Added to the running stack: Kafka and SeaweedFS kept running.
        assert {n: s["pid"] for n, s in info["services"].items() if n != "cassandra-1"} == {
            n: s["pid"] for n, s in first["services"].items()}
        cassandra, node = info["cassandra"], info["services"]["cassandra-1"]
        port = cassandra["port"]
        assert cassandra == {"contact_points": ["127.0.0.1"], "port": port,
                             "url": f"cassandra://127.0.0.1:{port}/harmony"}
        assert node["address"] == f"127.0.0.1:{port}" and node["alive"] and info["running"]
        assert (state / "cassandra" / "node1" / "cassandra.yaml").exists()
        assert "Startup complete" in (state / "logs" / "cassandra-1.log").read_text()

        [(version,)] = cql(cassandra, "SELECT release_version FROM system.local")
        assert version.startswith("5.0.")
        cql(cassandra,
            "CREATE KEYSPACE harmony_test WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE TABLE harmony_test.rows (id int PRIMARY KEY, body text)",
            insert="INSERT INTO harmony_test.rows (id, body) VALUES (?, ?)",
            rows=[(row, f"row {row}") for row in range(ROWS)])
        assert cql(cassandra, "SELECT body FROM harmony_test.rows WHERE id = 7") == [("row 7",)]
        figures["RSS MB"] = rss_mb(node["pid"])

        status = harmony("stack", "status", env=env)
        assert status["running"] and status["cassandra"] == cassandra
        assert status["services"]["cassandra-1"] == {**node, "alive": True}

        began = time.monotonic()
        harmony("stack", "down", env=env)
        figures["down"] = time.monotonic() - began
        assert not any(launcher._alive(s["pid"]) for s in info["services"].values())
        assert harmony("stack", "status", env=env) == {"running": False, "state_dir": str(state)}

        # The next `up --cassandra` finds its rows, on the same port.
        began = time.monotonic()
        again = harmony("stack", "up", "--cassandra", env=env)
        figures["restarted with the whole stack"] = time.monotonic() - began
        assert again["cassandra"] == cassandra
        assert cql(cassandra, "SELECT count(*) FROM harmony_test.rows") == [(ROWS,)]

        # A plain `up` on a stack running with Cassandra restarts a killed node.
        killed = again["services"]["cassandra-1"]["pid"]
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: not launcher._alive(killed), 30, "the killed node never went away")
        began = time.monotonic()
        repaired = harmony("stack", "up", env=env)
        figures["restarted after SIGKILL"] = time.monotonic() - began
        assert repaired["running"] and repaired["cassandra"] == cassandra
        assert repaired["services"]["cassandra-1"]["pid"] != killed
        assert repaired["services"]["kafka-1"] == again["services"]["kafka-1"]
        assert launcher.cql_release_version("127.0.0.1", port) == version
        assert cql(cassandra, "SELECT count(*) FROM harmony_test.rows") == [(ROWS,)], "a kill loses no table"
    finally:
        launcher.down(state)
        print("\ncassandra, one node: " + ", ".join(
            f"{name} {value:.1f}s" if isinstance(value, float) else f"{name} {value}"
            for name, value in figures.items()))
    assert not any(launcher._alive(s["pid"]) for s in repaired["services"].values())


def test_the_session_node_serves_cql(cassandra_node):
    port = cassandra_node["port"]
    assert cassandra_node == {"contact_points": ["127.0.0.1"], "port": port,
                              "url": f"cassandra://127.0.0.1:{port}/harmony"}
    assert launcher.cql_release_version("127.0.0.1", port).startswith("5.0.")
