"""Run one import: stream a source's events into the log with the bulk producer, show progress.

Parsing, encoding and producing share one process and one event loop: the source is a lazy
generator, `KafkaEventLog.append_bulk` packs ~1 MB record batches per partition and keeps
the broker busy, so memory stays flat however large the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from commands.imports.rows import ImportContext
from events.codec import Sealer
from events.log import KafkaEventLog, LogConfig
from events.topic import ensure_topics

BULK_TIMEOUT = 30.0  # seconds a batch may wait for its acknowledgement
BULK_LINGER_MS = 20  # only partial batches linger; full ones are sent at once


class Source(Protocol):
    name: str

    @property
    def files(self) -> list: ...

    def events(self, context: ImportContext): ...


@dataclass
class ImportResult:
    source: str
    files: list[str]
    topic: str
    events_appended: int
    reviews: int
    movies: int
    bad_rows: int
    bad_row_examples: list[str]
    truncated_summaries: int
    truncated_texts: int
    seconds: float  # parsing + appending, until the last acknowledgement
    total_seconds: float  # including connecting, creating the topic and a --strict check
    last_offsets: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events_appended / self.seconds if self.seconds > 0 else 0.0

    def figures(self) -> dict:
        return {
            "source": self.source, "files": self.files, "topic": self.topic,
            "events_appended": self.events_appended, "reviews": self.reviews, "movies": self.movies,
            "bad_rows": self.bad_rows, "bad_row_examples": self.bad_row_examples,
            "truncated_summaries": self.truncated_summaries, "truncated_texts": self.truncated_texts,
            "seconds": round(self.seconds, 3), "total_seconds": round(self.total_seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "last_offsets": {str(p): o for p, o in sorted(self.last_offsets.items())},
            "notes": self.notes,
        }

    def describe(self) -> str:
        lines = [
            f"imported {self.reviews:,} reviews and {self.movies:,} movies: {self.events_appended:,} events "
            f"appended to {self.topic} in {self.seconds:.1f} s ({self.events_per_second:,.0f} events/s)"
        ]
        if self.bad_rows:
            lines.append(f"skipped {self.bad_rows:,} bad rows" + (", the first ones:" if self.bad_row_examples else ""))
            lines += [f"  {example}" for example in self.bad_row_examples]
        if self.truncated_summaries or self.truncated_texts:
            lines.append(
                f"truncated {self.truncated_summaries:,} summaries and {self.truncated_texts:,} texts to the event limits"
            )
        lines += self.notes
        return "\n".join(lines)


class EventRate(ProgressColumn):
    """Events acknowledged per second since the task started."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        events = task.fields.get("events", 0)
        rate = events / elapsed if elapsed > 0 else 0.0
        return Text(f"{events:>11,} events {rate:>9,.0f}/s", style="progress.data.speed")


def progress_bar(console: Console | None = None, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), EventRate(), TimeElapsedColumn(),
        console=console or Console(stderr=True), disable=disable,
    )


async def run_import(
    config: LogConfig,
    source: Source,
    sealer: Sealer,
    *,
    strict: bool = False,
    progress: Progress | None = None,
    recorded_at: datetime | None = None,
) -> ImportResult:
    """Import `source` into the log's topic; BadRowError under `strict` before anything is appended."""
    started = time.perf_counter()
    total = sum(path.stat().st_size for path in source.files)
    progress = progress or progress_bar(disable=True)
    await ensure_topics(config.bootstrap, config.topics)
    log = KafkaEventLog(config.bootstrap, config.topic, sealer=sealer,
                        timeout=max(BULK_TIMEOUT, config.append_timeout), linger_ms=BULK_LINGER_MS)
    await log.start()
    try:
        with progress:
            if strict:
                task = progress.add_task(f"checking {source.name}", total=total, events=0)
                check = ImportContext(source.name, strict=True, recorded_at=recorded_at,
                                      on_bytes=lambda done, task=task: progress.update(task, completed=done))
                for _ in source.events(check):  # raises BadRowError at the first bad row
                    pass
                progress.update(task, completed=total, events=check.stats.reviews + check.stats.movies)

            task = progress.add_task(f"importing {source.name}", total=total, events=0)
            acked = 0

            def on_acked(count: int) -> None:
                nonlocal acked
                acked += count
                progress.update(task, events=acked)

            context = ImportContext(source.name, strict=strict, recorded_at=recorded_at,
                                    on_bytes=lambda done, task=task: progress.update(task, completed=done))
            appending = time.perf_counter()
            positions = await log.append_bulk(source.events(context), on_acked=on_acked)
            seconds = time.perf_counter() - appending
            progress.update(task, completed=total, events=acked)
    finally:
        await log.stop()

    stats = context.stats
    return ImportResult(
        source=source.name, files=[str(path) for path in source.files], topic=config.topic,
        events_appended=acked, reviews=stats.reviews, movies=stats.movies, bad_rows=stats.bad_rows,
        bad_row_examples=[str(row) for row in stats.examples],
        truncated_summaries=stats.truncated_summaries, truncated_texts=stats.truncated_texts,
        seconds=seconds, total_seconds=time.perf_counter() - started,
        last_offsets={p.partition: p.offset for p in positions}, notes=list(stats.notes),
    )
