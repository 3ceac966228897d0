"""The composition root: the one place that reads settings and builds the parts a process runs with.

Every `harmony` command starts here. The inner layers get typed configuration (`LogConfig`,
`WorkerConfig`, `ArchiverConfig`, `Params`) and built collaborators (the projection store, the
event log, the S3 client, Spark), never `Settings`; this is the only module that names a store
adapter.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import functools
import hashlib
import hmac
import os
import secrets
import time

from events.errors import HarmonyError
from events.log import KafkaEventLog, LogConfig
from harmony.settings import Settings
from projections.store import ProjectionStore


def log_config(settings: Settings) -> LogConfig:
    if not settings.kafka_bootstrap:
        raise HarmonyError("no broker: run `harmony stack up` or set HARMONY_KAFKA_BOOTSTRAP")
    return LogConfig(settings.kafka_bootstrap, settings.topic, settings.partitions, settings.append_timeout)


def event_log(settings: Settings, keys=None) -> KafkaEventLog:
    """The API's producer (started by the API's lifespan), sealing with `keys` (default: the keyring)."""
    from events.codec import Sealer

    config = log_config(settings)
    return KafkaEventLog(config.bootstrap, config.topic, timeout=config.append_timeout,
                         sealer=Sealer(keys or keyring(settings)))


def store(settings: Settings) -> ProjectionStore:
    """The projection store `HARMONY_STORE` names."""
    if settings.store_url.startswith("sqlite:///"):
        from projections.sqlite_store import SQLiteStore

        return SQLiteStore(settings.store_url.removeprefix("sqlite:///"))
    if settings.store_url.startswith("cassandra://"):
        from projections.cassandra_store import CassandraStore

        return CassandraStore(cassandra_config(settings))
    raise HarmonyError(f"unsupported HARMONY_STORE {settings.store_url!r}: use sqlite:///path or "
                       "cassandra://host1,host2:port/keyspace")


def cassandra_config(settings: Settings, url: str | None = None):
    """`cassandra://host1,host2:port/keyspace` (port 9042 and keyspace `harmony` when left out): the
    store's URL, or `url`."""
    from projections.cassandra_store import CassandraConfig

    url = url or settings.store_url
    where, _, keyspace = url.removeprefix("cassandra://").partition("/")
    hosts, _, port = where.rpartition(":") if ":" in where else (where, "", "9042")
    keyspace = keyspace or "harmony"
    if not hosts or not port.isdigit() or not keyspace.replace("_", "").isalnum():
        raise HarmonyError(f"{url!r} is not cassandra://host1,host2:port/keyspace")
    return CassandraConfig(tuple(hosts.split(",")), int(port), keyspace, settings.cassandra_replication,
                           settings.cassandra_consistency, connect_timeout=5.0)


def s3(settings: Settings):
    """A boto3 S3 client for the archive's server, with the archive's bucket created if missing."""
    from botocore.exceptions import BotoCoreError, ClientError

    from archive.segments import ensure_bucket, s3_client

    if not settings.s3_endpoint:
        raise HarmonyError("no S3 server: run `harmony stack up` or set HARMONY_S3_ENDPOINT")
    client = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key,
                       settings.aws_region)
    try:  # the first request: S3 unreachable or refusing is one line naming where
        ensure_bucket(client, settings.s3_bucket)
    except (BotoCoreError, ClientError) as error:
        raise HarmonyError(f"S3 at {settings.s3_endpoint} (bucket {settings.s3_bucket}): {error}") from None
    return client


def archive_source(settings: Settings):
    """Where Spark's tasks read the archive from (plain values: they build their own clients)."""
    from ml.replay import ArchiveSource

    return ArchiveSource(settings.s3_endpoint, settings.s3_bucket, settings.topic, settings.aws_access_key_id,
                         settings.aws_secret_access_key, settings.aws_region)


def spark(settings: Settings):
    from ml.spark import session

    return session(settings.spark_master, driver_memory=settings.spark_driver_memory,
                   executor_memory=settings.spark_executor_memory)


def training_params(settings: Settings):
    """The hyperparameters the settings give (used when `harmony train` does not tune)."""
    from ml.training import Params

    return Params(rank=settings.als_rank, reg=settings.als_reg, max_iter=settings.als_max_iter)


def token_key(settings: Settings) -> bytes:
    """HARMONY_TOKEN_KEY, or the key generated once into the state dir (readable by its owner only)."""
    from api.tokens import MIN_KEY

    if settings.token_key:
        if len(settings.token_key) < MIN_KEY:
            raise HarmonyError(f"HARMONY_TOKEN_KEY must have at least {MIN_KEY} characters")
        return settings.token_key.encode()
    return _generated_secret(settings, "token.key", lambda: secrets.token_urlsafe(48)).encode()


def master_keys(settings: Settings) -> tuple[bytes, tuple[bytes, ...]]:
    """The master key (HARMONY_MASTER_KEY, or the key generated once into the state dir) and the
    other ones that may still wrap keys (HARMONY_PREVIOUS_MASTER_KEY; master.key.next while
    `harmony keys rotate` moves the keys to it)."""
    current = settings.master_key or _generated_secret(
        settings, "master.key", lambda: base64.b64encode(os.urandom(32)).decode())
    previous = [(settings.previous_master_key, "HARMONY_PREVIOUS_MASTER_KEY")] if settings.previous_master_key else []
    rotating = settings.state_dir / "master.key.next"
    if not settings.master_key and rotating.exists() and (text := _private_text(rotating).strip()):
        previous.append((text, str(rotating)))
    return _master_key(current, "HARMONY_MASTER_KEY"), tuple(_master_key(key, name) for key, name in previous)


def _master_key(text: str, name: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise HarmonyError(f"{name} (or master.key) must be 32 bytes in base64")
    return key


def key_store(settings: Settings):
    """The key store `HARMONY_KEY_STORE` names."""
    url = settings.key_store_url
    if url.startswith("sqlite:///"):
        from keys.sqlite_keys import SQLiteKeys

        return SQLiteKeys(url.removeprefix("sqlite:///"))
    if url.startswith("cassandra://"):
        from keys.cassandra_keys import CassandraKeys

        return CassandraKeys(cassandra_config(settings, url))
    raise HarmonyError(f"unsupported HARMONY_KEY_STORE {url!r}: use sqlite:///path or "
                       "cassandra://host1,host2:port/keyspace")


def keyring(settings: Settings):
    """The users' subjects and data keys, unwrapped with the master key."""
    from keys.keyring import Keyring

    current, previous = master_keys(settings)
    return Keyring(key_store(settings), current, previous)


def _generated_secret(settings: Settings, name: str, make) -> str:
    """The text of a secret generated once into the state dir by `make` (mode 600)."""
    path = settings.state_dir / name
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:  # exclusive create: of two processes starting at once, one writes and both read its secret
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(make())
    for _ in range(50):  # the other process may be between its create and its write
        if text := _private_text(path).strip():
            return text
        time.sleep(0.1)
    raise HarmonyError(f"{path} is empty: delete it to have a new one generated")


def _private_text(path) -> str:
    """A secret file's text, if it is one only this user controls: not a symbolic link (which could
    lead anywhere), owned by this user and closed to everyone else; else a one-line refusal."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise HarmonyError(f"{path} is a symbolic link: refusing it as a key; put the key file itself "
                               "there") from None
        raise
    with os.fdopen(descriptor) as file:
        found = os.fstat(descriptor)
        if found.st_uid != os.getuid():
            raise HarmonyError(f"{path} is owned by user id {found.st_uid}, not this user: refusing it as a key")
        if found.st_mode & 0o077:
            raise HarmonyError(f"{path} is open to other users (mode {found.st_mode & 0o777:o}): refusing it as "
                               f"a key; `chmod 600 {path}` if no one else has read it, else delete it")
        return file.read()


def token_signer(settings: Settings):
    from api.tokens import TokenSigner

    return TokenSigner(token_key(settings), settings.token_lifetime)


def csrf_key(settings: Settings) -> bytes:
    """The key of the website's CSRF tokens: one of its own, derived from the token key, so every API
    process of a deployment accepts a form another one rendered."""
    return hmac.new(token_key(settings), b"csrf", hashlib.sha256).digest()


def accounts(settings: Settings, log: KafkaEventLog, projection_store: ProjectionStore):
    """The accounts: opened on the accounts topic, read from the store's accounts view (which the
    projection worker keeps)."""
    from commands.accounts import Accounts, Passwords
    from projections.accounts import StoredAccounts

    topic = log_config(settings).accounts_topic
    return Accounts(log, topic, StoredAccounts(projection_store, functools.partial(log.ends, topic)),
                    Passwords(settings.password_hashes))


async def open_account(settings: Settings, command) -> None:
    """`harmony accounts add`: open an account as the API does, from here (a projection worker
    must be running to confirm it), also for a user id with reviews but no account (an imported user)."""
    log = event_log(settings)
    projection_store = await asyncio.to_thread(store, settings)
    try:
        await log.start()
        try:
            await accounts(settings, log, projection_store).open(command, by_operator=True)
        finally:
            await log.stop()
    finally:
        projection_store.close()


def api(settings: Settings):
    """The API app with its store, producer, command handlers and accounts, and the website beside it."""
    from api.app import create_app
    from api.auth import Auth, openings_limit
    from api.metrics import InstrumentedLog, install
    from api.reviews import recorded_in
    from commands.handlers import ReviewCommands
    from web import pages

    keys = keyring(settings)
    log = event_log(settings, keys)
    projection_store = store(settings)
    auth = Auth(accounts(settings, log, projection_store), token_signer(settings), projection_store,
                openings_limit(settings.accounts_per_hour), private_history=settings.private_history)
    appends = InstrumentedLog(log)
    commands = ReviewCommands(appends, recorded_in(projection_store))
    app = create_app(projection_store, log, commands, auth, forgetting(appends, keys, projection_store, commands),
                     site=pages.routes(), not_found=pages.not_found)
    app.state.csrf_key = csrf_key(settings)
    install(app, appends, archive_progress(settings))
    return app


def forgetting(log, keys, projection_store: ProjectionStore, commands=None):
    """How a user is forgotten: on this log, keyring and store (and `commands`' memory of them)."""
    from commands.forgetting import Forgetting

    return Forgetting(log, keys, projection_store, caches=(commands.forget_user,) if commands else ())


async def forget_user(settings: Settings, user_id: str):
    """`harmony users forget`: forget a user as the API does, from here."""
    keys = keyring(settings)
    log = event_log(settings, keys)
    projection_store = await asyncio.to_thread(store, settings)
    try:
        await log.start()
        try:
            return await forgetting(log, keys, projection_store).forget(user_id)
        finally:
            await log.stop()
    finally:
        projection_store.close()
        keys.records.close()


def archive_progress(settings: Settings):
    """What /metrics reads the archive's last offsets with; None without an S3 server."""
    from archive.progress import ArchiveProgress
    from archive.segments import s3_client

    if not settings.s3_endpoint:
        return None
    # Short timeouts: a scrape must not wait long on S3 (an unreadable archive is reported as such).
    # Not s3(): its bucket check would make the API's start depend on S3.
    client = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key,
                       settings.aws_region, retries=1, connect_timeout=1, read_timeout=2)
    return ArchiveProgress(client, settings.s3_bucket, settings.topic).archived


def run_worker(settings: Settings) -> None:
    from projections import worker

    config = worker.WorkerConfig(log_config(settings), settings.catch_up_lag, settings.state_dir / "faust")
    worker.run(config, store(settings), keyring(settings))


def run_archiver(settings: Settings) -> None:
    from archive import process

    config = process.ArchiverConfig(
        log=log_config(settings), bucket=settings.s3_bucket, faust_dir=settings.state_dir / "faust",
        segment_records=settings.archive_segment_records, segment_bytes=settings.archive_segment_bytes,
        segment_age=settings.archive_segment_age, gzip_level=settings.archive_gzip_level,
        uploads=settings.archive_uploads, fast_lag=settings.archive_fast_lag,
        compaction=compaction_policy(settings), compact_interval=settings.archive_compact_interval,
    )
    process.run(config, s3(settings))


def compaction_policy(settings: Settings):
    """How `harmony archive compact` and the archiver's background passes merge segments."""
    from archive.compaction import CompactionPolicy

    return CompactionPolicy(settings.archive_compact_bytes, settings.archive_compact_age, settings.archive_gzip_level)
