"""What every importer shares: row checks, event builders, bad-row accounting, chunked reading.

The checks here are the ones the event types declare (`events.types`): msgspec checks
constraints only when decoding, so an importer that builds structs directly must check
them itself, or the projector would dead-letter what the importer appended.
"""

from __future__ import annotations

import gzip
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from hashlib import sha1
from pathlib import Path
from typing import Callable, Iterator

from commands.handlers import CLOCK_SKEW, EARLIEST_REVIEW
from events.errors import HarmonyError
from events.types import MovieCatalogued, ReviewSubmitted, Summary, Text, UserId, max_length

IMPORT_NAMESPACE = uuid.UUID("2b5f0c1e-8d7a-5c3b-9e41-7a6d2f9c0b53")
"""uuid5 namespace of imported events: the same row always gets the same event id."""

MAX_ID = max_length(UserId)
MAX_SUMMARY = max_length(Summary)
MAX_TEXT = max_length(Text)
MAX_EXAMPLES = 5  # bad rows shown by line number
CHUNK_BYTES = 1 << 20

_NAMESPACE_HASH = sha1(IMPORT_NAMESPACE.bytes)
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def event_id(natural_key: str) -> str:
    """`str(uuid.uuid5(IMPORT_NAMESPACE, natural_key))`, without building UUID objects (hot path)."""
    digest = _NAMESPACE_HASH.copy()
    digest.update(natural_key.encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


class RowProblem(ValueError):
    """Why one row cannot be imported."""


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.reason}"


class BadRowError(HarmonyError):
    """A bad row under --strict: the import stops at it."""

    def __init__(self, row: BadRow):
        super().__init__(f"bad row: {row}")
        self.row = row


@dataclass
class ImportStats:
    reviews: int = 0
    movies: int = 0
    bad_rows: int = 0
    examples: list[BadRow] = field(default_factory=list)
    truncated_summaries: int = 0
    truncated_texts: int = 0
    bytes_read: int = 0
    notes: list[str] = field(default_factory=list)


def show(value: bytes | str, limit: int = 40) -> str:
    """A field as an error message quotes it: repr, shortened."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return repr(value if len(value) <= limit else value[:limit] + "...")


def text_of(value: bytes, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise RowProblem(f"{what} {show(value)} is not UTF-8") from None


def check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID:
        raise RowProblem(f"{what} {show(value)} must be 1 to {MAX_ID} characters")
    return value


def parse_rating(value: bytes | str | float) -> float:
    """A rating of 0.5 to 5 in half steps (MovieLens: 1-5 or half stars; Amazon: 1-5)."""
    try:
        rating = float(value)
    except (TypeError, ValueError):
        shown = show(value if isinstance(value, (bytes, str)) else str(value))
        raise RowProblem(f"rating {shown} is not a number") from None
    if not 0.5 <= rating <= 5.0 or (rating * 2) % 1:
        raise RowProblem(f"rating {rating:g} is not 0.5 to 5 in half steps")
    return rating


def parse_seconds(value: bytes | str | int | float) -> int | float:
    """Unix seconds; an integral float becomes an int so natural keys do not depend on the notation."""
    if isinstance(value, (bytes, str)):
        try:
            return int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise RowProblem(f"timestamp {show(value)} is not a number of seconds") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RowProblem(f"timestamp {value} is not a number of seconds")
        if value.is_integer():
            return int(value)
    return value


class ImportContext:
    """One import run: its clock, its strictness, its figures and its bad rows."""

    def __init__(
        self,
        source: str,
        *,
        strict: bool = False,
        recorded_at: datetime | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ):
        self.source = source
        self.strict = strict
        self.recorded_at = recorded_at or datetime.now(timezone.utc)
        self.latest = self.recorded_at + CLOCK_SKEW
        self.stats = ImportStats()
        self.on_bytes = on_bytes

    def bad(self, file: str, line: int, reason: str) -> None:
        """Count a bad row (and keep the first few), or stop the import under --strict."""
        row = BadRow(file, line, reason)
        if self.strict:
            raise BadRowError(row)
        self.stats.bad_rows += 1
        if len(self.stats.examples) < MAX_EXAMPLES:
            self.stats.examples.append(row)

    def note(self, message: str) -> None:
        if message not in self.stats.notes:
            self.stats.notes.append(message)

    def moment(self, seconds: int | float) -> datetime:
        try:
            moment = datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise RowProblem(f"timestamp {seconds} is out of range") from None
        if not EARLIEST_REVIEW <= moment <= self.latest:
            raise RowProblem(f"timestamp {seconds} ({moment:%Y-%m-%d}) is not between 1900 and now")
        return moment

    def clip_summary(self, summary: str) -> str:
        if len(summary) > MAX_SUMMARY:
            self.stats.truncated_summaries += 1
            return summary[:MAX_SUMMARY]
        return summary

    def clip_text(self, text: str) -> str:
        if len(text) > MAX_TEXT:
            self.stats.truncated_texts += 1
            return text[:MAX_TEXT]
        return text

    def review(
        self,
        natural_key: str,
        user_id: str,
        movie_id: str,
        rating: float,
        seconds: int | float,
        summary: str = "",
        text: str = "",
    ) -> ReviewSubmitted:
        """A checked review event; `rating` must come from parse_rating, ids from check_id.

        Over-long summaries and texts are truncated to the event limits (and counted).
        """
        moment = self.moment(seconds)
        if len(summary) > MAX_SUMMARY:
            summary = self.clip_summary(summary)
        if len(text) > MAX_TEXT:
            text = self.clip_text(text)
        self.stats.reviews += 1
        return ReviewSubmitted(
            event_id=event_id(natural_key), occurred_at=moment, recorded_at=self.recorded_at,
            user_id=user_id, movie_id=movie_id, rating=rating, summary=summary, text=text,
            reviewed_at=moment, source=self.source,
        )

    def movie(self, natural_key: str, movie_id: str, title: str, year: int | None, genres: tuple[str, ...]):
        if not title:
            raise RowProblem("the title is empty")
        self.stats.movies += 1
        return MovieCatalogued(
            event_id=event_id(natural_key), occurred_at=self.recorded_at, recorded_at=self.recorded_at,
            movie_id=check_id(movie_id, "movie id"), title=title, year=year, genres=genres,
        )

    def read_chunks(self, path: Path) -> Iterator[list[bytes]]:
        """The lines of a file (gzip if it ends in .gz), about a megabyte at a time; counts bytes read."""
        base = self.stats.bytes_read
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
            while lines := stream.readlines(CHUNK_BYTES):
                self.stats.bytes_read = base + raw.tell()
                if self.on_bytes is not None:
                    self.on_bytes(self.stats.bytes_read)
                yield lines

    def read_text(self, path: Path, encodings: tuple[str, ...] = ("utf-8", "latin-1")) -> str:
        """A small file's text in the first encoding that decodes it; counts its bytes as read."""
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        self.stats.bytes_read += path.stat().st_size
        if self.on_bytes is not None:
            self.on_bytes(self.stats.bytes_read)
        for encoding in encodings[:-1]:
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                continue
        return data.decode(encodings[-1], "replace")


def is_blank(line: bytes) -> bool:
    return len(line) <= 2 and not line.strip()
