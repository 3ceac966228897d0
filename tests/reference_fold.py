"""A reference fold of the review log in plain dicts: the oracle the projections are checked against.

It shares no code with `projections/` or `events/fold.py` (only the event types), so a bug there
cannot hide itself by being in the check too. The rules, in the words of those modules' docstrings:

* records are applied in log order per partition, and a position counts once;
* an event id counts once, at its first position: a later copy is skipped (a dead-lettered
  record, None, counts only its offset);
* a `ReviewSubmitted` replaces the (user, movie) review; a `ReviewRetracted` removes it;
* a `MovieCatalogued` is a state: the newest by log position wins, whatever its event id;
* the history holds every applied review event (no catalogue ones).

`normalise` brings a store's `contents()` (SQLite's or Cassandra's, whose rows encode times and
genres differently) into the same shape, and `assert_same` names the first difference.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Iterable, NamedTuple

import msgspec

from events.types import MovieCatalogued, ReviewSubmitted

ENVELOPE = {"event_id", "type", "schema_version", "occurred_at", "recorded_at"}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Views(NamedTuple):
    reviews: dict  # (user, movie) -> (rating, summary, text, reviewed_at µs, event_id)
    movies: dict  # movie -> (title, year, genres tuple, image_url)
    history: dict  # event_id -> (user, type, occurred_at µs, recorded_at µs, partition, offset, payload)
    checkpoints: dict  # partition -> last offset


def micros(moment: datetime | int) -> int:
    """Microseconds since the epoch; a naive datetime is UTC (as Cassandra's driver answers)."""
    if isinstance(moment, int):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // timedelta(microseconds=1)


def reference_fold(records: Iterable[tuple[int, int, object]]) -> Views:
    """Fold (partition, offset, event or None) records, given in log order per partition."""
    views = Views({}, {}, {}, {})
    seen: set[str] = set()  # review event ids applied
    for partition, offset, event, *_ in records:
        if offset <= views.checkpoints.get(partition, -1):
            continue  # this position was applied already
        views.checkpoints[partition] = offset
        if event is None:
            continue
        if isinstance(event, MovieCatalogued):
            views.movies[event.movie_id] = (event.title, event.year, tuple(event.genres), event.image_url)
            continue
        if event.event_id in seen:
            continue  # a copy of an event applied at an earlier position
        seen.add(event.event_id)
        key = (event.user_id, event.movie_id)
        if isinstance(event, ReviewSubmitted):
            views.reviews[key] = (event.rating, event.summary, event.text, micros(event.reviewed_at), event.event_id)
        else:
            views.reviews.pop(key, None)
        wire = msgspec.to_builtins(event)  # the payload as JSON would carry it
        views.history[event.event_id] = (event.user_id, wire["type"], micros(event.occurred_at),
                                         micros(event.recorded_at), partition, offset,
                                         {k: v for k, v in wire.items() if k not in ENVELOPE})
    return views


# -- a store's contents() in the same shape -------------------------------------------------------

def _genres(value) -> tuple:
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(value or ())


def _payload(value) -> dict:
    return json.loads(value) if isinstance(value, str) else msgspec.to_builtins(value)


def _unique(view: str, pairs: Iterable[tuple]) -> dict:
    out: dict = {}
    for key, value in pairs:
        assert key not in out, f"{view}: the store holds {key!r} twice: {out[key]!r} and {value!r}"
        out[key] = value
    return out


def normalise(contents: dict[str, list[tuple]]) -> Views:
    """A store's `contents()` as `Views` (rows as the port documents them: reviews start with
    (user, movie), movies with the movie, history rows hold (partition, offset) at 5 and 6)."""
    return Views(
        reviews=_unique("reviews", (((user, movie), (float(rating), summary, text, micros(at), event_id))
                                    for user, movie, rating, summary, text, at, event_id in contents["reviews"])),
        movies=_unique("movies", ((movie, (title, year, _genres(genres), image_url))
                                  for movie, title, year, genres, image_url in contents["movies"])),
        history=_unique("history", ((event_id, (user, type_, micros(occurred), micros(recorded), partition, offset,
                                                _payload(payload)))
                                    for event_id, user, type_, occurred, recorded, partition, offset, payload
                                    in contents["history"])),
        checkpoints=_unique("checkpoints", ((partition, offset) for partition, offset in contents["checkpoints"])),
    )


def first_difference(actual: Views, expected: Views, names: tuple[str, str] = ("store", "reference")) -> str | None:
    """The first difference, view by view in key order, with how many rows of that view differ."""
    for view in Views._fields:
        got, want = getattr(actual, view), getattr(expected, view)
        differing = sorted(key for key in got.keys() | want.keys() if got.get(key, ...) != want.get(key, ...))
        if differing:
            key = differing[0]
            show = {name: (side[key] if key in side else "nothing") for name, side in zip(names, (got, want))}
            return (f"{view} {key!r} ({len(differing)} of {len(want)} rows differ; {names[0]} has {len(got)}): "
                    + "; ".join(f"{name} has {value!r}" for name, value in show.items()))
    return None


def assert_same(contents: dict[str, list[tuple]], expected: Views, what: str = "the store") -> None:
    """Assert a store's `contents()` equal the reference fold, naming the first difference."""
    difference = first_difference(normalise(contents), expected)
    assert difference is None, f"{what} differs from the reference fold of the log: {difference}"
