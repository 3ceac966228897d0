"""Every setting in one place, read from the environment.

| variable | default |
|---|---|
| `HARMONY_STATE_DIR` | `.harmony/` in the project folder (ignored by git) |
| `HARMONY_KAFKA_BOOTSTRAP` | the broker of the running local stack |
| `HARMONY_S3_ENDPOINT` | the S3 server of the running local stack |
| `HARMONY_S3_BUCKET` | `harmony-archive` |
| `HARMONY_STORE` | `sqlite:///<state dir>/projections.db` (or `cassandra://h1,h2:port/keyspace`: docs/cassandra.md) |
| `HARMONY_CASSANDRA_REPLICATION` | `1`: the replication factor of the keyspace when the Cassandra store creates it |
| `HARMONY_CASSANDRA_CONSISTENCY` | `LOCAL_QUORUM`: the consistency level of the Cassandra store's reads and writes |
| `HARMONY_TOPIC` | `harmony.reviews` (the dead-letter topic adds `.deadletter`) |
| `HARMONY_PARTITIONS` | `6` (used when the topic is created) |
| `HARMONY_KAFKA_HEAP` | `512m`: the JVM heap of each local Kafka broker (`-Xms`/`-Xmx`) |
| `HARMONY_CASSANDRA_HEAP` | `512m`: the JVM heap of each local Cassandra node (`harmony stack up --cassandra`) |
| `HARMONY_APPEND_TIMEOUT` | `3.0` seconds before a command answers 503 |
| `HARMONY_TOKEN_KEY` | the key access tokens are signed with (at least 32 characters); unset: a random key generated once into `<state dir>/token.key` (mode 600). Every API process of a deployment needs the same one |
| `HARMONY_MASTER_KEY` | the key every user's data key is wrapped with: 32 bytes, base64 (`python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`); unset: a random key generated once into `<state dir>/master.key` (mode 600). Back it up apart from the key store |
| `HARMONY_PREVIOUS_MASTER_KEY` | none: while `harmony keys rotate` re-wraps the keys under a new `HARMONY_MASTER_KEY`, the one they were wrapped with |
| `HARMONY_KEY_STORE` | `sqlite:///<state dir>/keys.db` (or `cassandra://h1,h2:port/keyspace`): the users' data keys, never derived from the log nor archived (`harmony keys backup`) |
| `HARMONY_TOKEN_LIFETIME` | `3600` seconds an access token is valid |
| `HARMONY_TRUSTED_PROXIES` | none: `X-Forwarded-For`/`X-Forwarded-Proto` are ignored. Comma-separated addresses or networks (`10.0.0.0/8`) of the reverse proxies whose forwarded headers name the client (the sign-in throttle counts by it) and the scheme |
| `HARMONY_ACCOUNTS_PER_HOUR` | `10` account openings (`POST /v1/accounts`) one client address may ask for an hour, counted in the projection store by every API process |
| `HARMONY_PASSWORD_HASHES` | `2` password hashes (argon2id: ~0.25 s of a core and 64 MiB each) one API process computes at once; 4 more a slot may wait, further sign-ins and sign-ups are answered 503 |
| `HARMONY_PRIVATE_HISTORY` | `0`: anyone may read a user's history; `1`: only with that user's token |
| `HARMONY_LOG_FORMAT` | `json` (or `console`) |
| `HARMONY_CATCH_UP_LAG` | `5000` records behind the log end (over the partitions it owns) before the projection worker reads the log directly |
| `HARMONY_ARCHIVE_SEGMENT_RECORDS` | `100000` records per archive segment at most |
| `HARMONY_ARCHIVE_SEGMENT_BYTES` | `16777216` bytes of keys and values per segment (about) |
| `HARMONY_ARCHIVE_SEGMENT_AGE` | `5.0` seconds a record waits at most before its segment is written |
| `HARMONY_ARCHIVE_GZIP_LEVEL` | `3` |
| `HARMONY_ARCHIVE_UPLOADS` | `2` segment uploads at once |
| `HARMONY_ARCHIVE_FAST_LAG` | `5000` records behind the log end before the archiver reads the log directly |
| `HARMONY_ARCHIVE_COMPACT_BYTES` | `67108864` (64 MiB): compaction merges a partition's segments into objects of about this many bytes (compressed) ... |
| `HARMONY_ARCHIVE_COMPACT_AGE` | `86400` seconds: ... or of this long a time of writes, once it has passed (archive/compaction.py) |
| `HARMONY_ARCHIVE_COMPACT_INTERVAL` | `600` seconds between the archiver's compaction passes over the partitions it owns; `0`: none |
| `HARMONY_MODEL_PREFIX` | `models/`: model artefacts go to `s3://<bucket>/<prefix><version>/` |
| `HARMONY_MODEL_VERSIONS` | `3` published model versions kept (at least 1); older ones' factor rows, registry rows and artefacts are deleted after each publication, never the current version's |
| `HARMONY_SPARK_MASTER` | `local[2]` (any Spark master URL) |
| `HARMONY_SPARK_DRIVER_MEMORY` | `4g` (in local mode the driver also runs the executors) |
| `HARMONY_SPARK_EXECUTOR_MEMORY` | `2g`: the memory of each executor on a standalone master; `harmony stack up --spark-workers N` has each worker offer this much (one executor each) |
| `HARMONY_TRAIN_TUNE` | `1`: `harmony train` picks hyperparameters on an inner split of its training data; `0`: the three below |
| `HARMONY_ALS_RANK` | `50` (chosen by cross-validation on MovieLens 100K training folds) |
| `HARMONY_ALS_REG` | `0.15` (ALS regParam; the same) |
| `HARMONY_ALS_MAX_ITER` | `15` |
| `HARMONY_TRAIN_HOLDOUT` | `0.1` of the ratings held out to measure the model before it is refitted on all |
| `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION` | the local stack's keys, `us-east-1` |

Explicit variables win over what the local stack reports in `<state dir>/stack.json`.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from events.errors import HarmonyError

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_KAFKA_HEAP = "512m"
DEFAULT_CASSANDRA_HEAP = "512m"
DEFAULT_SPARK_EXECUTOR_MEMORY = "2g"
CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    kafka_bootstrap: str
    s3_endpoint: str
    s3_bucket: str
    store_url: str
    cassandra_replication: int
    cassandra_consistency: str
    topic: str
    partitions: int
    kafka_heap: str
    cassandra_heap: str
    append_timeout: float
    token_key: str
    master_key: str
    previous_master_key: str
    key_store_url: str
    token_lifetime: int
    accounts_per_hour: int
    password_hashes: int
    private_history: bool
    trusted_proxies: str
    log_format: str
    catch_up_lag: int
    archive_segment_records: int
    archive_segment_bytes: int
    archive_segment_age: float
    archive_gzip_level: int
    archive_uploads: int
    archive_fast_lag: int
    archive_compact_bytes: int
    archive_compact_age: float
    archive_compact_interval: float
    model_prefix: str
    model_versions: int
    spark_master: str
    spark_driver_memory: str
    spark_executor_memory: str
    train_tune: bool
    als_rank: int
    als_reg: float
    als_max_iter: int
    train_holdout: float
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_region: str


def state_dir() -> Path:
    return Path(os.environ.get("HARMONY_STATE_DIR") or PROJECT_DIR / ".harmony").resolve()


def load() -> Settings:
    env = os.environ
    directory = state_dir()
    stack = _running_stack(directory)
    return Settings(
        state_dir=directory,
        kafka_bootstrap=env.get("HARMONY_KAFKA_BOOTSTRAP") or stack.get("kafka_bootstrap", ""),
        s3_endpoint=env.get("HARMONY_S3_ENDPOINT") or stack.get("s3_endpoint", ""),
        s3_bucket=env.get("HARMONY_S3_BUCKET", "harmony-archive"),
        store_url=env.get("HARMONY_STORE") or f"sqlite:///{directory / 'projections.db'}",
        cassandra_replication=_number(env, "HARMONY_CASSANDRA_REPLICATION", 1, int, 1),
        cassandra_consistency=_choice(env, "HARMONY_CASSANDRA_CONSISTENCY", "LOCAL_QUORUM", CONSISTENCY_LEVELS),
        topic=env.get("HARMONY_TOPIC", "harmony.reviews"),
        partitions=_number(env, "HARMONY_PARTITIONS", 6, int, 1),
        kafka_heap=env.get("HARMONY_KAFKA_HEAP", DEFAULT_KAFKA_HEAP),
        cassandra_heap=env.get("HARMONY_CASSANDRA_HEAP", DEFAULT_CASSANDRA_HEAP),
        append_timeout=_number(env, "HARMONY_APPEND_TIMEOUT", 3.0, float, 0.1),
        token_key=env.get("HARMONY_TOKEN_KEY", ""),
        master_key=env.get("HARMONY_MASTER_KEY", ""),
        previous_master_key=env.get("HARMONY_PREVIOUS_MASTER_KEY", ""),
        key_store_url=env.get("HARMONY_KEY_STORE") or f"sqlite:///{directory / 'keys.db'}",
        token_lifetime=_number(env, "HARMONY_TOKEN_LIFETIME", 3600, int, 1),
        accounts_per_hour=_number(env, "HARMONY_ACCOUNTS_PER_HOUR", 10, int, 1),
        password_hashes=_number(env, "HARMONY_PASSWORD_HASHES", 2, int, 1),
        private_history=_number(env, "HARMONY_PRIVATE_HISTORY", 0, int, 0) != 0,
        trusted_proxies=_addresses(env, "HARMONY_TRUSTED_PROXIES"),
        log_format=env.get("HARMONY_LOG_FORMAT", "json"),
        catch_up_lag=_number(env, "HARMONY_CATCH_UP_LAG", 5_000, int, 0),
        archive_segment_records=_number(env, "HARMONY_ARCHIVE_SEGMENT_RECORDS", 100_000, int, 1),
        archive_segment_bytes=_number(env, "HARMONY_ARCHIVE_SEGMENT_BYTES", 16 << 20, int, 1),
        archive_segment_age=_number(env, "HARMONY_ARCHIVE_SEGMENT_AGE", 5.0, float, 0.001),
        # 3: ~150 MB/s of JSON on one core, 5.9x smaller; 6 is half as fast for ~12% less.
        archive_gzip_level=_number(env, "HARMONY_ARCHIVE_GZIP_LEVEL", 3, int, 0),
        archive_uploads=_number(env, "HARMONY_ARCHIVE_UPLOADS", 2, int, 1),
        archive_fast_lag=_number(env, "HARMONY_ARCHIVE_FAST_LAG", 5_000, int, 0),
        archive_compact_bytes=_number(env, "HARMONY_ARCHIVE_COMPACT_BYTES", 64 << 20, int, 1),
        archive_compact_age=_number(env, "HARMONY_ARCHIVE_COMPACT_AGE", 86_400.0, float, 0.0),
        archive_compact_interval=_number(env, "HARMONY_ARCHIVE_COMPACT_INTERVAL", 600.0, float, 0.0),
        model_prefix=env.get("HARMONY_MODEL_PREFIX", "models/"),
        model_versions=_number(env, "HARMONY_MODEL_VERSIONS", 3, int, 1),
        spark_master=env.get("HARMONY_SPARK_MASTER", "local[2]"),
        spark_driver_memory=env.get("HARMONY_SPARK_DRIVER_MEMORY", "4g"),
        spark_executor_memory=env.get("HARMONY_SPARK_EXECUTOR_MEMORY", DEFAULT_SPARK_EXECUTOR_MEMORY),
        train_tune=_number(env, "HARMONY_TRAIN_TUNE", 1, int, 0) != 0,
        als_rank=_number(env, "HARMONY_ALS_RANK", 50, int, 1),
        als_reg=_number(env, "HARMONY_ALS_REG", 0.15, float, 0.0),
        als_max_iter=_number(env, "HARMONY_ALS_MAX_ITER", 15, int, 1),
        train_holdout=_number(env, "HARMONY_TRAIN_HOLDOUT", 0.1, float, 0.0),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or stack.get("access_key", ""),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or stack.get("secret_key", ""),
        aws_region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def _number(env, name: str, default, kind: type, low):
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise HarmonyError(f"{name}={raw!r} is not a number") from None
    if value < low:
        raise HarmonyError(f"{name}={raw!r} is below {low}")
    return value


def _addresses(env, name: str) -> str:
    """Comma-separated IP addresses or networks, checked, in the form uvicorn's forwarded_allow_ips takes."""
    items = [item.strip() for item in env.get(name, "").split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise HarmonyError(f"{name}: {item!r} is not an IP address or network") from None
    return ",".join(items)


def _choice(env, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise HarmonyError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _running_stack(directory: Path) -> dict:
    try:
        return json.loads((directory / "stack.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
