"""Amazon product reviews, one JSON object a line (the 2014 and 2018 dumps; plain or .gz).

Fields used: `reviewerID` (user), `asin` (movie), `overall` (1-5), `unixReviewTime`,
`summary` and `reviewText` (truncated to the event limits, and counted); other fields,
`reviewerName` among them, are not part of a review event. Review files carry no titles
(Amazon ships them in a separate metadata file), so no catalogue events come from here.
PATH is a file, or a folder whose *.json, *.jsonl (optionally .gz) files are read in name order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import msgspec

from commands.imports.rows import ImportContext, RowProblem, check_id, is_blank, parse_rating, parse_seconds
from events.errors import HarmonyError
from events.types import Event

_PATTERNS = ("*.json", "*.jsonl", "*.json.gz", "*.jsonl.gz")


class AmazonReview(msgspec.Struct):
    reviewerID: str
    asin: str
    overall: float
    unixReviewTime: int | float
    summary: str | None = None
    reviewText: str | None = None
    reviewerName: str | None = None


_decoder = msgspec.json.Decoder(AmazonReview)


@dataclass(frozen=True)
class AmazonSource:
    paths: tuple[Path, ...]

    name = "amazon"

    @property
    def files(self) -> list[Path]:
        return list(self.paths)

    @classmethod
    def locate(cls, path: Path) -> "AmazonSource":
        if path.is_dir():
            found = sorted({p for pattern in _PATTERNS for p in path.glob(pattern) if p.is_file()})
            if not found:
                raise HarmonyError(f"no Amazon review files in {path}: expected *.json, *.jsonl or .gz ones")
            return cls(tuple(found))
        if path.is_file():
            return cls((path,))
        raise HarmonyError(f"{path} does not exist")

    def events(self, context: ImportContext) -> Iterator[Event]:
        context.note("Amazon review files have no titles: no catalogue events")
        for path in self.paths:
            yield from self._reviews(path, context)

    def _reviews(self, path: Path, context: ImportContext) -> Iterator[Event]:
        file = path.name
        decode = _decoder.decode
        review = context.review
        lineno = 0
        for lines in context.read_chunks(path):
            for line in lines:
                lineno += 1
                try:
                    row = decode(line)
                except msgspec.ValidationError as error:
                    context.bad(file, lineno, str(error))
                    continue
                except msgspec.DecodeError as error:
                    if not is_blank(line):
                        context.bad(file, lineno, f"not JSON: {error}")
                    continue
                try:
                    user = check_id(row.reviewerID, "reviewerID")
                    movie = check_id(row.asin, "asin")
                    rating = parse_rating(row.overall)
                    seconds = parse_seconds(row.unixReviewTime)
                    event = review(
                        f"amazon:{user}:{movie}:{seconds}:{rating:g}", user, movie, rating, seconds,
                        row.summary or "", row.reviewText or "",
                    )
                except RowProblem as problem:
                    context.bad(file, lineno, str(problem))
                    continue
                yield event
