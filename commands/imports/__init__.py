"""Importers: historical reviews (MovieLens, Amazon) become events appended to the review log.

Each source streams its files into `ReviewSubmitted` and `MovieCatalogued` events with
deterministic ids (uuid5 over a natural key of the row), so importing the same file again
appends events the projector has already applied and skips. Bad rows are counted and
reported by line number, or abort the import with `strict`.

    rows.py       shared row checks, event builders, bad-row accounting, chunked file reading
    movielens.py  MovieLens 100K / 1M / 10M / ratings.csv / RecBole atomic files
    amazon.py     Amazon review JSON lines (plain or gzip)
    runner.py     the bulk append with progress, and the figures
    cli.py        `harmony import {movielens,amazon} PATH [--strict] [--json]`
"""

from commands.imports.rows import BadRow, BadRowError, ImportContext, ImportStats
from events.errors import HarmonyError

__all__ = ["BadRow", "BadRowError", "ImportContext", "ImportStats", "open_source"]


def open_source(kind: str, path):
    """The importer for `kind` ("movielens" or "amazon") reading `path`; HarmonyError if it cannot."""
    from pathlib import Path

    if kind == "movielens":
        from commands.imports.movielens import MovieLensSource

        return MovieLensSource.locate(Path(path))
    if kind == "amazon":
        from commands.imports.amazon import AmazonSource

        return AmazonSource.locate(Path(path))
    raise HarmonyError(f"unknown import source {kind!r}: use movielens or amazon")
