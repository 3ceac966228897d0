"""The `harmony` command line. Errors are one readable line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError

from events.errors import HarmonyError
from harmony import bootstrap, logs
from harmony.settings import Settings, load
from projections.store import REBUILDABLE


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from harmony import stack

    if args.action == "up":
        info = stack.up(settings.state_dir, settings.topic, settings.partitions, args.brokers, settings.kafka_heap,
                        cassandra_nodes=args.cassandra_nodes or (1 if args.cassandra else 0),
                        cassandra_heap=settings.cassandra_heap, spark_workers=args.spark_workers,
                        spark_memory=settings.spark_executor_memory)
    elif args.action == "down":
        stack.down(settings.state_dir)
        info = stack.status(settings.state_dir)
    else:
        info = stack.status(settings.state_dir)
    print(json.dumps(info) if args.json else stack.describe(info))
    return 0 if args.action == "down" or info["running"] else 1


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    bootstrap.run_worker(settings)
    return 0


def cmd_archiver(settings: Settings, args: argparse.Namespace) -> int:
    bootstrap.run_archiver(settings)
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from harmony.services import serve_api

    serve_api(settings, args.host, args.port, args.workers)
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from commands.imports.cli import run

    from events.codec import Sealer

    return run(bootstrap.log_config(settings), Sealer(bootstrap.keyring(settings)), args)


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from harmony.maintenance import run_rebuild

    return run_rebuild(settings, args.name, args.from_archive, args.json)


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    from harmony.maintenance import run_verify

    return run_verify(settings, args.json)


def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    from harmony.maintenance import run_compact

    return run_compact(settings, args.json)


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from harmony.maintenance import run_train

    return run_train(settings, settings.train_tune and not args.no_tune, args.json)


def cmd_accounts(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    import msgspec

    from commands.accounts import OpenAccount

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.user_id}: ")
        if getpass.getpass("the same again: ") != password:
            raise HarmonyError("the two passwords differ")
    try:
        command = msgspec.convert({"user_id": args.user_id, "password": password}, OpenAccount)
    except msgspec.ValidationError as error:  # names the field, never echoes the value
        raise HarmonyError(str(error)) from None
    asyncio.run(bootstrap.open_account(settings, command))
    print(f"opened an account for {args.user_id}: POST /v1/tokens with its user id and password gives a token")
    return 0


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    receipt = asyncio.run(bootstrap.forget_user(settings, args.user_id))
    print(f"forgot {args.user_id}: their key is deleted and the projections drop their rows "
          f"(event {receipt.event_id} at {receipt.position.partition}/{receipt.position.offset})")
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from harmony.maintenance import run_migrate

    return run_migrate(settings, args.topic, args.delete_old, args.json)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from harmony import keys_admin

    if args.action == "backup":
        print(keys_admin.backup(settings, args.path))
    elif args.action == "restore":
        print(keys_admin.restore(settings, args.path))
    else:
        print(keys_admin.rotate(settings))
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from harmony.demo import run

    return run(settings, args.host, args.port, args.store, args.spark_workers)


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from ml.evaluation import run

    return run(args, bootstrap.spark(settings), bootstrap.training_params(settings))


def cmd_evaluate_pairs(settings: Settings, args: argparse.Namespace) -> int:
    from ml.group_evaluation import run

    if args.pairs < 1:
        raise HarmonyError("--pairs must be at least 1")
    return run(args, bootstrap.spark(settings), bootstrap.training_params(settings), settings.train_holdout)


def spark_workers(text: str) -> int:
    """--spark-workers: a count of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a number of workers, at least 1, not {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="harmony", description="moviEharmony: movies two people may like together")
    sub = top.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop and describe the local Kafka broker(s), S3 server, Cassandra, Spark")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--brokers", type=int, choices=[1, 3],
                       help="Kafka brokers for a new state dir (default 1; 3: replication 3, min.insync.replicas 2)")
    stack.add_argument("--cassandra", action="store_true",
                       help="up: also start one Apache Cassandra node (a stack running with Cassandra keeps it)")
    stack.add_argument("--cassandra-nodes", type=int, choices=[1, 3],
                       help="up: also start Cassandra with this many nodes (127.0.0.1-3, fixed for the state dir)")
    stack.add_argument("--spark-workers", type=spark_workers, default=0, metavar="N",
                       help="up: also start a Spark standalone master and N workers (a stack running with Spark "
                            "keeps it); train on it with HARMONY_SPARK_MASTER set to the master's URL")
    stack.add_argument("--json", action="store_true", help="print one JSON object")
    stack.set_defaults(run=cmd_stack)

    sub.add_parser("worker", help="run the Faust projection worker").set_defaults(run=cmd_worker)
    sub.add_parser("archiver", help="run the S3 event archiver").set_defaults(run=cmd_archiver)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1,
                     help="API processes sharing the port, each with its own producer (default 1)")
    api.set_defaults(run=cmd_api)

    importing = sub.add_parser("import", help="append historical reviews (MovieLens, Amazon) as events")
    importing.add_argument("source", choices=["movielens", "amazon"])
    importing.add_argument("path", help="a MovieLens folder or ratings file; an Amazon JSON-lines file (.gz ok)")
    importing.add_argument("--strict", action="store_true", help="abort on the first bad row")
    importing.add_argument("--json", action="store_true", help="print one JSON object of figures")
    importing.set_defaults(run=cmd_import)

    rebuild = sub.add_parser("rebuild", help="rebuild a projection from the log (or the archive) and swap it in")
    rebuild.add_argument("name", choices=["all", *REBUILDABLE])
    rebuild.add_argument("--from-archive", action="store_true", help="replay the S3 archive, then the log's tail")
    rebuild.add_argument("--json", action="store_true", help="print one JSON object")
    rebuild.set_defaults(run=cmd_rebuild)

    verify = sub.add_parser("verify", help="check the archive against the log and the projection against a fold")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(run=cmd_verify)

    archive = sub.add_parser("archive", help="look after the S3 event archive")
    archive_actions = archive.add_subparsers(dest="action", required=True)
    compact = archive_actions.add_parser(
        "compact", help="merge each partition's closed segments into objects of HARMONY_ARCHIVE_COMPACT_BYTES "
                        "or a day (HARMONY_ARCHIVE_COMPACT_AGE); readers may read meanwhile")
    compact.add_argument("--json", action="store_true", help="print one JSON object of figures")
    compact.set_defaults(run=cmd_archive)

    train = sub.add_parser("train", help="replay the S3 archive into Spark ALS, evaluate, publish the model")
    train.add_argument("--no-tune", action="store_true",
                       help="use HARMONY_ALS_RANK/REG/MAX_ITER instead of tuning on the training data")
    train.add_argument("--json", action="store_true", help="print the published registry row as one JSON object")
    train.set_defaults(run=cmd_train)

    evaluate = sub.add_parser("evaluate", help="train and evaluate offline on MovieLens splits (Spark)")
    kinds = evaluate.add_subparsers(dest="kind", required=True)
    folds = kinds.add_parser("movielens", help="rating error and ranking of the rating model, u1-u5 folds")
    folds.add_argument("path", help="a MovieLens-100K-layout folder with u1..u5 .base/.test")
    folds.add_argument("--folds", action="store_true", required=True,
                       help="use the official u1-u5 .base/.test splits (tuning inside each .base only)")
    folds.set_defaults(run=cmd_evaluate)
    pairs = kinds.add_parser("pairs", help="the lists pairs of users get, per strategy, against baselines")
    pairs.add_argument("path", help="a MovieLens-100K-layout folder with u1..u5 .base/.test")
    pairs.add_argument("--folds", type=int, default=5, choices=range(1, 6), metavar="N",
                       help="use u1..uN (default 5)")
    pairs.add_argument("--pairs", type=int, default=1000, help="pairs of users per fold (default 1000)")
    pairs.set_defaults(run=cmd_evaluate_pairs)
    for kind in (folds, pairs):
        kind.add_argument("--no-tune", action="store_true", help="skip the inner tuning; use default parameters")
        kind.add_argument("--json", action="store_true", help="print one JSON object")

    accounts = sub.add_parser("accounts", help="open user accounts (imported users have none)")
    actions = accounts.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="open an account for a user id, asking for its password")
    add.add_argument("user_id")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(run=cmd_accounts)

    users = sub.add_parser("users", help="forget a user (GDPR article 17): as DELETE /v1/users/{id} does")
    user_actions = users.add_subparsers(dest="action", required=True)
    forget = user_actions.add_parser("forget", help="retire the user id, delete their key (their events become "
                                                   "unreadable) and have the projections drop their rows")
    forget.add_argument("user_id")
    users.set_defaults(run=cmd_users)

    migrate = sub.add_parser("migrate", help="copy the log (and the accounts topic) into a new topic with every "
                                             "personal event sealed: how a log written in clear is replaced")
    migrate.add_argument("topic", help="the new topic (its accounts topic is TOPIC.accounts)")
    migrate.add_argument("--delete-old", action="store_true",
                         help="then delete the old topics and their S3 archive (what makes forgetting complete)")
    migrate.add_argument("--json", action="store_true")
    migrate.set_defaults(run=cmd_migrate)

    keys = sub.add_parser("keys", help="back up, restore and re-wrap the users' data keys (the key store)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    for action, text in (("backup", "write every wrapped key, the forgotten ids' digests and the keyring's "
                                    "settings to PATH (mode 600)"),
                         ("restore", "put a backup's keys back into the key store, leaving out users forgotten "
                                     "since")):
        key_actions.add_parser(action, help=text).add_argument("path", metavar="PATH", type=Path)
    key_actions.add_parser("rotate", help="re-wrap every key under a new master key: a new master.key, or "
                                          "HARMONY_MASTER_KEY with the old one in HARMONY_PREVIOUS_MASTER_KEY")
    keys.set_defaults(run=cmd_keys)

    demo = sub.add_parser("demo", help="stack + worker + API with demo data; Ctrl-C stops it all")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--store", choices=["sqlite", "cassandra"], default="sqlite",
                      help="the projection store: embedded SQLite (default) or an Apache Cassandra node")
    demo.add_argument("--spark-workers", type=spark_workers, default=0, metavar="N",
                      help="train on a Spark standalone master and N workers the stack starts (default: local mode)")
    demo.set_defaults(run=cmd_demo)
    return top


# Failures the user can act on: the project's own, the broker or S3 unreachable or refusing, a
# file that is missing or unreadable. Anything else is a bug and keeps its traceback.
USER_ERRORS = (HarmonyError, KafkaError, BotoCoreError, ClientError, FileNotFoundError, PermissionError,
               IsADirectoryError, NotADirectoryError, ConnectionError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load()
        logs.configure(settings.log_format)
        return args.run(settings, args)
    except USER_ERRORS as error:
        print(f"harmony {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
