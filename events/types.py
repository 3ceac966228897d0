"""Event types: a tagged union over one envelope.

The envelope fields (`event_id`, `type`, `schema_version`, `occurred_at`,
`recorded_at`) live on the `Event` base; every other field is the payload.
On the wire an event is one flat JSON object whose `type` names its class.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Union

import msgspec

UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MovieId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Rating = Annotated[float, msgspec.Meta(ge=0.5, le=5.0, multiple_of=0.5)]
Summary = Annotated[str, msgspec.Meta(max_length=300)]
Text = Annotated[str, msgspec.Meta(max_length=20_000)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


def max_length(annotated) -> int:
    """The length limit a constrained string type declares (importers truncate or reject to it)."""
    return next(meta.max_length for meta in annotated.__metadata__ if meta.max_length is not None)

ENVELOPE_FIELDS = ("event_id", "type", "schema_version", "occurred_at", "recorded_at")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """The envelope every event carries.

    `schema_version` is written from the field's default: an event type whose payload changes
    overrides it (`schema_version: int = 2`) and registers an upcaster in events/codec.py.
    """

    event_id: str
    schema_version: int = 1
    occurred_at: Timestamp
    recorded_at: Timestamp

    # A personal event is sealed under its user's key in the log (events/sealing.py).
    personal: ClassVar[bool] = False

    @property
    def key(self) -> str:
        """The partition key: a user's events share one partition, so they are totally ordered."""
        raise NotImplementedError

    def payload(self) -> dict:
        fields = msgspec.structs.asdict(self)
        for name in ENVELOPE_FIELDS:
            fields.pop(name, None)
        return fields


class ReviewEvent(Event, frozen=True, kw_only=True):
    """An event about one user's review of one movie.

    `request_digest` is the digest of the request that asked for it when that request carried an
    Idempotency-Key (the event id then derives from the key): a retry is recognised by its event
    id, and told apart from another request under the same key by the digest.
    """

    user_id: UserId
    movie_id: MovieId
    request_digest: str | None = None

    personal: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return self.user_id


class ReviewSubmitted(ReviewEvent, frozen=True, kw_only=True, tag="ReviewSubmitted"):
    """A user rated a movie; a later one for the same user and movie supersedes it."""

    rating: Rating
    summary: Summary = ""
    text: Text = ""
    reviewed_at: Timestamp
    source: str = "api"


class ReviewRetracted(ReviewEvent, frozen=True, kw_only=True, tag="ReviewRetracted"):
    """A user withdrew their review of a movie."""


class MovieCatalogued(Event, frozen=True, kw_only=True, tag="MovieCatalogued"):
    """A movie's catalogue entry, usually from an import."""

    movie_id: MovieId
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    image_url: str | None = None

    @property
    def key(self) -> str:
        return f"movie:{self.movie_id}"


class AccountOpened(Event, frozen=True, kw_only=True, tag="AccountOpened"):
    """A user opened an account: who may write as `user_id` from now on. Kept on its own topic
    (events/topic.py), never in the review log or its archive; the first one for a user id in
    that topic's order holds it."""

    user_id: UserId
    password_hash: str  # argon2id, with its parameters and salt (PHC string)

    personal: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return self.user_id


class SubjectForgotten(Event, frozen=True, kw_only=True, tag="SubjectForgotten"):
    """A user asked to be forgotten: their key is deleted, so their sealed events are unreadable,
    and every view drops what it holds of them (their account too). Appended to the review log,
    keyed by the subject (so after the user's events), naming nothing but the subject."""

    subject: str

    @property
    def key(self) -> str:
        return self.subject


AnyEvent = Union[ReviewSubmitted, ReviewRetracted, MovieCatalogued, SubjectForgotten]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls for cls in (ReviewSubmitted, ReviewRetracted, MovieCatalogued, SubjectForgotten)
}


def schema_version(cls: type[Event]) -> int:
    """The version an event type writes: its `schema_version` field's default."""
    return next(f.default for f in msgspec.structs.fields(cls) if f.name == "schema_version")


SCHEMA_VERSIONS: dict[str, int] = {name: schema_version(cls) for name, cls in EVENT_TYPES.items()}
