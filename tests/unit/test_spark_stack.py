"""The launcher's Spark standalone cluster, without starting it: ports, command lines, limits, output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from harmony import cli, stack


def test_spark_ports_are_free_distinct_and_kept(tmp_path):
    ports = stack._choose_ports(tmp_path, spark_workers=2)
    spark = ports["spark"]
    assert len(spark) == 3 and all(len(pair) == 2 for pair in spark)  # the master's pair, then each worker's
    chosen = [p for pair in spark for p in pair]
    others = [ports[name] for name in stack.S3_PORTS] + [p for pair in ports["kafka"] for p in pair]
    assert len(set(chosen)) == 6 and not set(chosen) & set(others)
    (tmp_path / "ports.json").write_text(json.dumps(ports))
    assert stack._choose_ports(tmp_path, spark_workers=2)["spark"] == spark
    assert stack._choose_ports(tmp_path)["spark"] == spark  # kept while unused
    with socket.socket() as busy:  # another program took worker 2's web UI port: that worker gets a new pair
        busy.bind(("127.0.0.1", spark[2][1]))
        busy.listen()
        again = stack._choose_ports(tmp_path, spark_workers=2)["spark"]
    assert again[:2] == spark[:2] and spark[2][1] not in again[2]


def test_spark_commands_are_the_jvm_lines_spark_class_would_run(tmp_path):
    home = stack.find_spark_home()
    master = stack._spark_command("java", home, stack._spark_env(home), stack.SPARK_MASTER_CLASS,
                                  "--host", "127.0.0.1", "--port", "7077")
    assert master[0].endswith("/java") and master[-5:] == [stack.SPARK_MASTER_CLASS, "--host", "127.0.0.1",
                                                           "--port", "7077"]
    assert f"-Xmx{stack.SPARK_DAEMON_HEAP}" in master and "--add-opens=java.base/java.nio=ALL-UNNAMED" in master

    args, env = stack._spark_worker("java", home, tmp_path, "spark://127.0.0.1:7077", 2, [7078, 8082], 1, "1g")
    assert args[args.index(stack.SPARK_WORKER_CLASS):] == [
        stack.SPARK_WORKER_CLASS, "spark://127.0.0.1:7077", "--host", "127.0.0.1", "--port", "7078",
        "--webui-port", "8082", "--cores", str(os.cpu_count()), "--memory", "1g",
        "--work-dir", str(tmp_path / "spark" / "worker2" / "work")]
    # Whatever Spark writes goes to the state dir; SPARK_HOME, the wheel, is only read.
    assert env["SPARK_LOCAL_DIRS"] == str(tmp_path / "spark" / "worker2" / "local") and env["SPARK_HOME"] == str(home)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"


def test_fewer_spark_workers_than_running_is_one_line(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({"brokers": 1, "services": {},
                                                     "spark": stack.spark_endpoint([1, 2], 2)}))
    with pytest.raises(stack.StackError, match="runs 2 Spark worker"):
        stack.up(tmp_path, "t", 1, spark_workers=1)


def test_spark_workers_must_be_at_least_one(capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["stack", "up", "--spark-workers", "0"])
    assert "--spark-workers: must be a number of workers, at least 1" in capsys.readouterr().err
    assert cli.parser().parse_args(["demo", "--spark-workers", "2"]).spark_workers == 2


def test_describe_prints_the_master_to_export():
    info = {"running": True, "state_dir": "/s", "kafka_bootstrap": "127.0.0.1:1", "s3_endpoint": "http://127.0.0.1:2",
            "spark": stack.spark_endpoint([3, 4], 1),
            "services": {"spark-worker-1": {"pid": 9, "address": "127.0.0.1:5", "alive": True}}}
    lines = stack.describe(info).splitlines()
    assert ("  spark      spark://127.0.0.1:3  (web UI http://127.0.0.1:4; "
            "export HARMONY_SPARK_MASTER=spark://127.0.0.1:3 to train on it)") in lines
    assert lines[-1].split()[:3] == ["spark-worker-1", "pid", "9"]


def test_a_zombie_of_another_parent_counts_as_gone():
    """`harmony stack down` run beside the process that started the stack (which has not reaped its exited
    services) must not wait on them forever."""
    parent = subprocess.Popen(["sh", "-c", "sleep 0.2 & echo $!; exec sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while stack._alive(zombie) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not stack._alive(zombie)
        os.kill(zombie, 0)  # still in the process table: its parent has not reaped it
    finally:
        parent.kill()
        parent.wait()
