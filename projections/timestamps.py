"""How stores keep a moment: microseconds since the epoch in UTC, an integer that sorts as time does
(Cassandra's `timestamp` keeps only milliseconds; the API's times keep microseconds)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + value * MICROSECOND
