"""`harmony rebuild`, `verify` and `train`: wiring settings, stores, S3, Spark and progress output."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harmony.settings import Settings
from events.archive import ensure_bucket, s3_client
from projections import rebuild as rebuilding
from projections import verify as verifying
from projections.sqlite_store import SQLiteStore

console = Console(stderr=True, log_path=False)


def _store(settings: Settings) -> SQLiteStore:
    if not settings.store_url.startswith("sqlite:///"):
        raise ValueError("rebuild and verify support the SQLite store only so far")
    return SQLiteStore(settings.store_url.removeprefix("sqlite:///"))


def _require_broker(settings: Settings) -> None:
    if not settings.kafka_bootstrap:
        raise ValueError("no broker: run `harmony stack up` or set HARMONY_KAFKA_BOOTSTRAP")


def _s3(settings: Settings):
    if not settings.s3_endpoint:
        raise ValueError("no S3 server: run `harmony stack up` or set HARMONY_S3_ENDPOINT")
    client = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key,
                       settings.aws_region)
    ensure_bucket(client, settings.s3_bucket)  # no archiver run yet: an empty archive, not an error
    return client


def _archive(settings: Settings, strict: bool):
    from events.archive import read_archive

    return read_archive(_s3(settings), settings.s3_bucket, settings.topic, strict=strict)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def run_rebuild(settings: Settings, name: str, from_archive: bool, as_json: bool) -> int:
    _require_broker(settings)
    live = _store(settings)
    views = rebuilding.REBUILDABLE if name == "all" else [name]
    total = sum(offset + 1 for offset in live.checkpoint().values())
    with _progress() as progress:
        task = progress.add_task(f"rebuilding {', '.join(views)}", total=total or None)
        result = asyncio.run(rebuilding.rebuild(
            live, settings.kafka_bootstrap, settings.topic, views,
            archive=_archive(settings, strict=True) if from_archive else None,  # never fold over a hole
            progress=lambda n: progress.advance(task, n),
        ))
    live.close()
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"rebuilt {', '.join(views)}: {result['from_archive']:,} records from the archive, "
                      f"{result['from_log']:,} from the log; swapped in")
    return 0


def run_verify(settings: Settings, as_json: bool) -> int:
    _require_broker(settings)
    live = _store(settings)
    with console.status("folding the log and comparing the projection ..."), tempfile.TemporaryDirectory() as tmp:
        projection = asyncio.run(
            verifying.verify_projection(settings.kafka_bootstrap, settings.topic, live, Path(tmp) / "fold.db"))
    with console.status("comparing the S3 archive with the log ..."):
        archive = asyncio.run(  # not strict: a hole is a difference to name, not an error
            verifying.verify_archive(settings.kafka_bootstrap, settings.topic, _archive(settings, strict=False)))
    live.close()
    result = {"ok": projection["difference"] is None and archive["difference"] is None,
              "projection": projection, "archive": archive}
    if as_json:
        print(json.dumps(result))
    else:
        for name, check in (("projection", projection), ("archive", archive)):
            console.print(f"{name}: " + ("ok" if check["difference"] is None else f"DIFFERS: {check['difference']}"))
    return 0 if result["ok"] else 1


def training_params(settings: Settings, tune: bool):
    """None (tune them) or the hyperparameters the settings give."""
    from ml.training import Params

    if tune:
        return None
    return Params(rank=settings.als_rank, reg=settings.als_reg, max_iter=settings.als_max_iter)


def run_train(settings: Settings, tune: bool, as_json: bool) -> int:
    from ml import spark as spark_session
    from ml.replay import ArchiveSource
    from ml.retrain import retrain

    client = _s3(settings)
    source = ArchiveSource(settings.s3_endpoint, settings.s3_bucket, settings.topic, settings.aws_access_key_id,
                           settings.aws_secret_access_key, settings.aws_region)
    live = _store(settings)
    with console.status("starting Spark ...") as status:
        def progress(message: str) -> None:
            console.log(message)
            status.update(message)

        spark = spark_session.session(settings.spark_master, driver_memory=settings.spark_driver_memory)
        info = retrain(spark, source, live, client, prefix=settings.model_prefix,
                       params=training_params(settings, tune), holdout=settings.train_holdout, progress=progress)
    live.close()
    if as_json:
        print(msgspec.json.encode(info).decode())
    else:
        holdout = info.metrics.get("holdout")
        figures = f"holdout RMSE {holdout['rmse']:.4f}, nDCG@10 {holdout['ndcg@10']:.4f}" if holdout else "no holdout"
        console.print(f"published model {info.version} (rank {info.rank}, {info.metrics['ratings']:,} ratings, "
                      f"{figures}); watermark {info.watermark}")
    return 0
