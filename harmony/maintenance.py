"""`harmony rebuild`, `verify`, `train` and `archive compact`: wiring settings, stores, S3, Spark and
progress output."""

from __future__ import annotations

import asyncio
import json

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
)

from events.errors import HarmonyError
from events.reader import log_offsets
from harmony import bootstrap
from harmony.settings import Settings
from projections import rebuild as rebuilding
from projections import verify as verifying
from projections.store import REBUILDABLE

console = Console(stderr=True, log_path=False)


def _archive(settings: Settings, log: dict[int, range] | None):
    """The archive's records; given the log's offsets, a hole in the archive raises ArchiveError."""
    from archive.segments import read_archive

    return read_archive(bootstrap.s3(settings), settings.s3_bucket, settings.topic, log=log)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def run_rebuild(settings: Settings, name: str, from_archive: bool, as_json: bool) -> int:
    log = bootstrap.log_config(settings)
    live = bootstrap.store(settings)
    views = list(REBUILDABLE) if name == "all" else [name]
    total = sum(offset + 1 for offset in live.checkpoint().values())
    # Never fold over a hole: the archive must hold the log from its start on.
    archive = _archive(settings, asyncio.run(log_offsets(log.bootstrap, log.topic))) if from_archive else None
    progress, task = _progress(), None

    def advance(records: int) -> None:
        nonlocal task
        if task is None:  # shown once the rebuild has the lease and reads: a refusal is one line
            progress.start()
            task = progress.add_task(f"rebuilding {', '.join(views)}", total=total or None)
        progress.advance(task, records)

    try:
        result = asyncio.run(rebuilding.rebuild(live, log.bootstrap, log.topic, views, bootstrap.keyring(settings),
                                                archive=archive, progress=advance))
    finally:
        progress.stop()
        live.close()
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"rebuilt {', '.join(views)}: {result['from_archive']:,} records from the archive, "
                      f"{result['from_log']:,} from the log; swapped in")
    return 0


def run_verify(settings: Settings, as_json: bool) -> int:
    log = bootstrap.log_config(settings)
    live = bootstrap.store(settings)
    with console.status("folding the log and comparing the projection ..."):
        projection = asyncio.run(verifying.verify_projection(log.bootstrap, log.topic, live,
                                                             bootstrap.keyring(settings)))
    with console.status("comparing the S3 archive with the log ..."):
        archive = asyncio.run(  # no log offsets: a hole is a difference to name, not an error
            verifying.verify_archive(log.bootstrap, log.topic, _archive(settings, None)))
    live.close()
    result = {"ok": projection["difference"] is None and archive["difference"] is None,
              "projection": projection, "archive": archive}
    if as_json:
        print(json.dumps(result))
    else:
        for name, check in (("projection", projection), ("archive", archive)):
            console.print(f"{name}: " + ("ok" if check["difference"] is None else f"DIFFERS: {check['difference']}"))
    return 0 if result["ok"] else 1


def run_compact(settings: Settings, as_json: bool) -> int:
    """One compaction pass over every partition of the archive (archive/compaction.py)."""
    from archive.compaction import Compactor

    compactor = Compactor(bootstrap.s3(settings), settings.s3_bucket, settings.topic,
                          bootstrap.compaction_policy(settings))
    with console.status("listing the archive ..."):
        plan = compactor.plan()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                        console=console)
    with progress:
        task = progress.add_task(f"merging {sum(len(run.segments) for run in plan.runs):,} segments "
                                 f"into {len(plan.runs):,}", total=plan.bytes)
        figures = compactor.run(plan, lambda size: progress.advance(task, size))
    if as_json:
        print(json.dumps(figures))
    else:
        console.print(f"compacted: {figures['objects_before']:,} objects, now {figures['objects_after']:,} "
                      f"({figures['merged']:,} written, {figures['deleted']:,} deleted) in {figures['seconds']} s")
    return 0


def run_train(settings: Settings, tune: bool, as_json: bool) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from ml import registry
    from ml.retrain import retrain

    client = bootstrap.s3(settings)  # the bucket is created if missing (no archiver run yet)
    log = bootstrap.log_config(settings)
    offsets = asyncio.run(log_offsets(log.bootstrap, log.topic))  # what the archive must cover
    live = bootstrap.store(settings)
    with console.status("starting Spark ...") as status:
        def progress(message: str) -> None:
            console.log(message)
            status.update(message)

        info = retrain(bootstrap.spark(settings), bootstrap.archive_source(settings), live, client, log=offsets,
                       data_keys=bootstrap.keyring(settings).data_keys(), prefix=settings.model_prefix,
                       params=bootstrap.training_params(settings), tune=tune, holdout=settings.train_holdout,
                       progress=progress)
    try:
        dropped = registry.retain(live, client, settings.s3_bucket, settings.model_prefix, settings.model_versions)
    except (BotoCoreError, ClientError) as error:  # published all the same; the next run finishes the clean-up
        console.print(f"[yellow]published; removing old versions failed: {error}[/]")
    else:
        if dropped:
            console.log(f"removed {len(dropped)} old model version(s): {', '.join(dropped)}")
    live.close()
    if as_json:
        print(msgspec.json.encode(info).decode())
    else:
        holdout = info.metrics.get("holdout")
        figures = f"holdout RMSE {holdout['rmse']:.4f}, nDCG@10 {holdout['ndcg@10']:.4f}" if holdout else "no holdout"
        console.print(f"published model {info.version} (rank {info.rank}, {info.metrics['ratings']:,} ratings, "
                      f"{figures}); watermark {info.watermark}")
    return 0


def run_migrate(settings: Settings, target: str, delete_old: bool, as_json: bool) -> int:
    """Copy the review log and the accounts topic into `target` (and `target.accounts`) sealed, then,
    with `delete_old`, delete the old topics and their archive (events/migration.py)."""
    from events.codec import Sealer
    from events.log import KafkaEventLog
    from events.migration import copy_sealed
    from events.topic import accounts_topic, delete_topics, ensure_topics, review_topics

    log = bootstrap.log_config(settings)
    if target == log.topic:
        raise HarmonyError(f"{target} is the log itself: name a new topic")
    keys = bootstrap.keyring(settings)
    pairs = [(log.topic, target, False), (log.accounts_topic, accounts_topic(target), True)]

    async def copy(advance) -> dict:
        await ensure_topics(log.bootstrap, review_topics(target, log.partitions))
        copied = {}
        for source, destination, accounts in pairs:
            sink = KafkaEventLog(log.bootstrap, destination, timeout=max(30.0, log.append_timeout), sealer=Sealer(keys))
            await sink.start()
            try:
                copied[destination] = await copy_sealed(log.bootstrap, source, sink, keys, accounts=accounts,
                                                        progress=advance)
            finally:
                await sink.stop()
        return copied

    async def total() -> int:
        return sum(len(held) for offsets in [await log_offsets(log.bootstrap, source) for source, _, _ in pairs]
                   for held in offsets.values())

    with _progress() as progress:
        task = progress.add_task(f"copying {log.topic} into {target}, sealed", total=asyncio.run(total()) or None)
        copied = asyncio.run(copy(lambda n: progress.advance(task, n)))
    deleted = {}
    if delete_old:
        from archive.segments import list_segments

        asyncio.run(delete_topics(log.bootstrap, [log.topic, log.deadletter_topic, log.accounts_topic]))
        client = bootstrap.s3(settings)
        segments = [s for chain in list_segments(client, settings.s3_bucket, log.topic).values() for s in chain]
        for segment in segments:
            client.delete_object(Bucket=settings.s3_bucket, Key=segment.key)
        deleted = {"topics": [log.topic, log.deadletter_topic, log.accounts_topic], "archive_objects": len(segments)}
    result = {topic: {"events": c.events, "left_behind": c.left_behind} for topic, c in copied.items()}
    keys.records.close()
    if as_json:
        print(json.dumps({"copied": result, "deleted": deleted}))
        return 0
    for topic, figures in result.items():
        left = ", ".join(f"{n:,} {why}" for why, n in figures["left_behind"].items()) or "none"
        console.print(f"copied {figures['events']:,} events into {topic} (left behind: {left})")
    if deleted:
        console.print(f"deleted the topics {', '.join(deleted['topics'])} and {deleted['archive_objects']:,} archive objects")
    console.print(f"now set HARMONY_TOPIC={target} and start the worker on an empty projection store (the views are "
                  "projected again from the new log; the archiver archives it)")
    return 0
