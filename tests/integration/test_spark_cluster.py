"""The Spark standalone cluster the stack starts (`harmony stack up --spark-workers 1`): listed by
`stack status`, trained on by `harmony train` when HARMONY_SPARK_MASTER names it, repaired by `up`,
stopped by `down`. The tests run in file order on one session cluster: the last one stops it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from archive.segments import ensure_bucket, put_segment, s3_client
from events.reader import read_log
from harmony import bootstrap
from harmony import stack as launcher
from harmony.settings import load
from tests.conftest import use_environment, wait_until
from tests.integration.helpers import produce_events, review_stream

pytestmark = pytest.mark.integration

SEGMENT = 500  # records per archive segment


def harmony(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harmony", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def master_json(webui: str) -> dict:
    """What the master's web UI says of its workers and applications."""
    with urllib.request.urlopen(f"{webui}/json/", timeout=10) as response:
        return json.load(response)


def command_line(pid: int) -> bytes | None:
    """The process's command line (a PID may be reused soon on a busy machine: compare what runs under it)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None


def archive_whole_log(settings) -> None:
    """Copy the test topic's log into S3 archive segments, as the archiver would."""
    async def records():
        return [record async for batch in read_log(settings.kafka_bootstrap, settings.topic) for record in batch]

    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(s3, settings.s3_bucket)
    by_partition: dict[int, list] = {}
    for record in asyncio.run(records()):
        by_partition.setdefault(record.partition, []).append(record)
    for part in by_partition.values():
        for start in range(0, len(part), SEGMENT):
            put_segment(s3, settings.s3_bucket, settings.topic, part[start:start + SEGMENT],
                        settings.archive_gzip_level)


def test_status_lists_the_master_and_its_worker(spark_cluster):
    run = harmony("stack", "status", "--json", env={**os.environ, "HARMONY_STATE_DIR": str(spark_cluster)})
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    spark, master, worker = info["spark"], info["services"]["spark-master"], info["services"]["spark-worker-1"]
    assert info["running"] and master["alive"] and worker["alive"] and spark["workers"] == 1
    assert spark["master"] == f"spark://{master['address']}" and spark["webui"] == master["webui"]
    listed = master_json(spark["webui"])
    assert listed["url"] == spark["master"] and listed["status"] == "ALIVE"
    [alive] = [w for w in listed["workers"] if w["state"] == "ALIVE"]
    assert f"{alive['host']}:{alive['port']}" == worker["address"] and alive["webuiaddress"] == worker["webui"]
    assert alive["memory"] == 1024 and alive["cores"] >= 1
    human = harmony("stack", "status", env={**os.environ, "HARMONY_STATE_DIR": str(spark_cluster)}).stdout
    assert f"export HARMONY_SPARK_MASTER={spark['master']}" in human


def test_harmony_train_runs_on_the_cluster(spark_cluster, monkeypatch, tmp_path):
    env = use_environment(monkeypatch, spark_cluster, f"sqlite:///{tmp_path / 'projections.db'}")
    settings = load()
    produce_events(settings.kafka_bootstrap, settings.topic, review_stream(2000, users=40, movies=60))
    archive_whole_log(settings)
    spark = launcher.status(spark_cluster)["spark"]
    finished_before = {app["id"] for app in master_json(spark["webui"])["completedapps"]}

    run = harmony("train", "--no-tune", "--json",
                  env={**env, "HARMONY_SPARK_MASTER": spark["master"], "HARMONY_SPARK_EXECUTOR_MEMORY": "1g",
                       "HARMONY_SPARK_DRIVER_MEMORY": "1g", "HARMONY_ALS_RANK": "4", "HARMONY_ALS_MAX_ITER": "5",
                       "HARMONY_TRAIN_HOLDOUT": "0"})  # one fit is enough to show where it ran
    assert run.returncode == 0, run.stderr[-3000:]
    published = json.loads(run.stdout)
    store = bootstrap.store(settings)
    assert store.model().version == published["version"]
    store.close()

    def finished() -> list[dict]:
        return [app for app in master_json(spark["webui"])["completedapps"] if app["id"] not in finished_before]

    [app] = wait_until(finished, 30, "the master never listed the training run as completed")
    assert app["name"] == "harmony-ml" and app["state"] == "FINISHED" and app["memoryperexecutor"] == 1024
    # Its executor ran on the stack's worker, in the state dir; Spark wrote nothing into the wheel.
    executor_dirs = list((spark_cluster / "spark" / "worker1" / "work" / app["id"]).iterdir())
    assert executor_dirs and (executor_dirs[0] / "stderr").stat().st_size > 0
    started = (spark_cluster / "kafka" / "cluster.json").stat().st_mtime
    written = [path for path in launcher.find_spark_home().rglob("*")
               if path.stat().st_mtime >= started and "__pycache__" not in path.parts]
    assert written == []


def test_up_restarts_a_killed_worker_and_down_stops_the_cluster(spark_cluster):
    env = {**os.environ, "HARMONY_STATE_DIR": str(spark_cluster), "HARMONY_SPARK_EXECUTOR_MEMORY": "1g"}
    before = launcher.status(spark_cluster)["services"]
    worker = before["spark-worker-1"]
    os.kill(worker["pid"], signal.SIGKILL)
    wait_until(lambda: not launcher.status(spark_cluster)["services"]["spark-worker-1"]["alive"], 10,
               "the killed worker still counts as alive")
    degraded = harmony("stack", "status", "--json", env=env)
    assert degraded.returncode == 1 and not json.loads(degraded.stdout)["running"]

    repaired = harmony("stack", "up", "--json", env=env)  # a plain up: the stack keeps its Spark cluster
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    info = json.loads(repaired.stdout)
    restarted = info["services"]["spark-worker-1"]
    assert info["running"] and info["spark"]["workers"] == 1
    assert restarted["pid"] != worker["pid"] and restarted["address"] == worker["address"]
    assert {name: s["pid"] for name, s in info["services"].items() if name != "spark-worker-1"} == {
        name: s["pid"] for name, s in before.items() if name != "spark-worker-1"}
    listed = master_json(info["spark"]["webui"])["workers"]
    assert [f"{w['host']}:{w['port']}" for w in listed if w["state"] == "ALIVE"] == [worker["address"]]

    commands = {s["pid"]: command_line(s["pid"]) for s in info["services"].values()}
    stopped = harmony("stack", "down", "--json", env=env)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert not json.loads(stopped.stdout)["running"]
    # Gone, or a zombie of this process (the fixture started them) with an empty command line.
    assert [pid for pid, command in commands.items() if command_line(pid) == command] == []
