"""Domain events: the single definition of every message in the review log."""

from events.types import (
    AnyEvent,
    Event,
    MovieCatalogued,
    ReviewRetracted,
    ReviewSubmitted,
    SCHEMA_VERSIONS,
)
from events.codec import DecodeError, decode, encode

__all__ = [
    "AnyEvent",
    "DecodeError",
    "Event",
    "MovieCatalogued",
    "ReviewRetracted",
    "ReviewSubmitted",
    "SCHEMA_VERSIONS",
    "decode",
    "encode",
]
