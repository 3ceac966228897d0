"""`harmony import {movielens,amazon} PATH [--strict] [--json]`.

A progress bar with the event rate goes to stderr, then a summary (bad rows by line number,
truncations); `--json` prints one JSON object of figures on stdout instead of the summary.
Exit status: 0 when the import finished (bad rows skipped and reported), 1 when it could
not run, found nothing to import, or met a bad row under `--strict` (then nothing was appended).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import zlib

from aiokafka.errors import KafkaConnectionError, KafkaError

from commands.imports import open_source
from commands.imports.rows import BadRowError
from commands.imports.runner import progress_bar, run_import
from events.codec import Sealer
from events.errors import HarmonyError
from events.log import LogConfig, LogUnavailable


def run(log: LogConfig, sealer: Sealer, args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"harmony import: {message}", file=sys.stderr)
        return 1

    try:
        source = open_source(args.source, args.path)
        result = asyncio.run(run_import(log, source, sealer, strict=args.strict, progress=progress_bar()))
    except BadRowError as error:
        return fail(f"{error.row} (--strict: nothing was appended)")
    except KafkaConnectionError as error:
        return fail(f"cannot reach the broker at {log.bootstrap}: {error}")
    except (LogUnavailable, KafkaError, TimeoutError) as error:
        return fail(f"the broker at {log.bootstrap} did not take the events: {error!r}")
    except (EOFError, zlib.error) as error:  # a truncated or corrupt .gz
        return fail(f"{args.path}: cannot be read to the end: {error}")
    except (HarmonyError, OSError) as error:
        return fail(str(error))
    if args.json:
        print(json.dumps(result.figures()))
    else:
        for line in result.describe().splitlines():
            print(f"harmony import: {line}", file=sys.stderr)
    if result.reviews + result.movies == 0:
        return fail(f"nothing to import in {args.path}" + (f" ({result.bad_rows:,} bad rows)" if result.bad_rows else ""))
    return 0
