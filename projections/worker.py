"""The Faust projection worker: consume the review log in batches and fold it into the store.

At-least-once delivery from the broker; the store's checkpoint and event-id
check make it exactly-once in effect. No Faust tables: state lives in the store.
A broker or a store away is waited out (events/retry.py): a retry goes on from the store's
checkpoint. Any other failure ends the process (crash-only): a restart does the same.

Beside it, the accounts view: a task follows the accounts topic from the store's accounts
checkpoint, outside Faust's group (projections/accounts.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import faust
import uvloop
from faust.types import TP

from events.faust_apps import crash_on_failure, faust_app, run_beside, skip_to
from events.log import LogConfig
from events.reader import LogRecord
from events.retry import broker_unavailable, retrying
from events.sealing import Keys
from events.topic import ensure_topics
from projections.accounts import follow_accounts
from projections.projector import DeadLetter, LogProjector
from projections.store import PartitionLag, ProjectionStore, StoreUnavailable

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
BATCH_WAIT = 0.05  # seconds to wait for a batch to fill when the log is quiet
LAG_INTERVAL = 2.0


def unavailable(error: BaseException) -> bool:
    """The broker or the store away for now (a Cassandra node overloaded by a backlog, say)."""
    return broker_unavailable(error) or isinstance(error, StoreUnavailable)


@dataclass(frozen=True)
class WorkerConfig:
    log: LogConfig
    catch_up_lag: int  # records behind the log end (over its partitions) before reading the log directly
    faust_dir: Path  # Faust writes a folder per app here


def create_app(config: WorkerConfig, store: ProjectionStore, keys: Keys) -> faust.App:
    topic = config.log.topic
    app = faust_app(f"harmony-projector.{topic}", config.log.bootstrap, config.faust_dir, BATCH_SIZE, 4)  # one group per log
    reviews = app.topic(topic, key_serializer="raw", value_serializer="raw", internal=False)
    deadletter = app.topic(config.log.deadletter_topic, key_serializer="raw", value_serializer="raw")

    async def dead_letter(letter: DeadLetter) -> None:
        sent = await deadletter.send(
            key=letter.record.key,
            value=letter.record.value or b"",
            headers={
                "reason": letter.reason.encode(),
                "source": f"{topic}/{letter.record.partition}/{letter.record.offset}".encode(),
            },
        )
        await sent
        log.warning("dead-lettered a record", extra={"partition": letter.record.partition,
                                                     "offset": letter.record.offset, "reason": letter.reason})

    projector = LogProjector(config.log.bootstrap, topic, store, dead_letter, keys)

    def rebalancing() -> bool:
        # A rebalance waits until this member's agent is done with its batch: a long catch-up stops
        # for it, so a member joining a group whose first member took every partition gets its share
        # at once, not after that member has read the whole backlog alone.
        return app.rebalancing

    @app.agent(reviews, concurrency=1)
    async def project(stream):
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WAIT):
            records = [LogRecord(e.message.partition, e.message.offset, e.message.key, e.message.value)
                       for e in batch]
            async with crash_on_failure("projection"):
                # A retry goes on from the store's checkpoint: nothing is applied twice.
                await retrying(unavailable, "projecting a batch", projector.project, records)
                # Far behind the log end: Faust's per-event stream (~100 us an event) would take
                # long, so read the backlog straight from the log in big batches, then skip it.
                lags = partition_lag(app, topic, await asyncio.to_thread(store.checkpoint))
                behind = {lag.partition: lag.high_watermark for lag in lags if lag.lag}
                if sum(lag.lag for lag in lags) > config.catch_up_lag:
                    log.info("reading the backlog straight from the log", extra={"until": behind})
                    if await retrying(unavailable, "reading the backlog", projector.catch_up, behind, rebalancing):
                        await skip_to(app, {TP(topic, partition): high for partition, high in behind.items()})

    @app.task
    async def project_accounts():
        async with crash_on_failure("projecting accounts"):
            await follow_accounts(config.log.bootstrap, config.log.accounts_topic, store, keys)

    stalled: dict[int, PartitionLag] = {}
    catching_up: set[asyncio.Task] = set()

    async def catch_up(until: dict[int, int]) -> None:
        async with crash_on_failure("projection"):
            log.info("catching up from the log", extra={"until": until})
            await retrying(unavailable, "catching up from the log", projector.catch_up, until, rebalancing)

    @app.timer(LAG_INTERVAL)
    async def report_lag():
        # Every store call inside crash_on_failure: an exception escaping a Faust timer crashes the app
        # without always ending the process, and a supervisor restarts only a process that exited.
        async with crash_on_failure("projection"):
            lags = partition_lag(app, topic, await asyncio.to_thread(store.checkpoint), projector.refused)
            # Lag that did not move for a whole interval while Faust delivers nothing (its group offsets
            # are ahead of this store): read it straight from the log.
            behind = {lag.partition: lag.high_watermark for lag in lags
                      if lag.lag and stalled.get(lag.partition) == lag}
            stalled.clear()
            stalled.update({lag.partition: lag for lag in lags})
            # Beside the timer: the report goes on every interval, however long reading the log takes
            # (a broker away, a big backlog), so a report that stops means a projector that stopped.
            if behind and not catching_up:
                run_beside(catching_up, catch_up(behind))
            if lags:
                await asyncio.to_thread(store.record_lag, lags)
                log.info("projector lag", extra={"lag": {lag.partition: lag.lag for lag in lags},
                                                 "total": sum(lag.lag for lag in lags),
                                                 "unreadable": projector.unreadable})

    return app


def partition_lag(app: faust.App, topic: str, done: dict[int, int],
                  refused: dict[int, int] | None = None) -> list[PartitionLag]:
    """Lag behind the store's checkpoint `done`, from the high watermark of the consumer's latest
    fetch (no extra request to the broker), with the commits refused per partition."""
    lags = []
    for tp in sorted(app.consumer.assignment()):
        if tp.topic != topic:
            continue
        high = app.consumer.highwater(tp)
        if high is None:
            continue
        checkpoint = done.get(tp.partition, -1)
        lags.append(PartitionLag.of(tp.partition, checkpoint, high, (refused or {}).get(tp.partition, 0)))
    return lags


def run(config: WorkerConfig, store: ProjectionStore, keys: Keys) -> None:
    """Run the worker until SIGINT/SIGTERM; the store is closed at the end."""
    started = time.monotonic()
    uvloop.install()  # Faust's per-event overhead is mostly event-loop work
    asyncio.run(ensure_topics(config.log.bootstrap, config.log.topics))
    app = create_app(config, store, keys)
    log.info("projection worker starting", extra={"broker": config.log.bootstrap,
                                                  "setup_s": round(time.monotonic() - started, 2)})
    worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        store.close()
