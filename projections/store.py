"""The projection-store port: what the projector writes and the read side asks, nothing more.

Adapters: `projections.sqlite_store` (embedded default) and `projections.cassandra_store`. The
composition root (`harmony/bootstrap.py`) picks one from `HARMONY_STORE`; nothing else names an
adapter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

import msgspec

from events.errors import HarmonyError
from events.lag import PartitionLag  # also imported from here by the store's users

ReviewKey = tuple[str, str]  # (user_id, movie_id)

# The views a rebuild can replace (the checkpoints move with them).
REBUILDABLE = ("reviews", "movies", "history")

# Every kind of factor row a model version has (ml.registry.publish writes them).
FACTOR_KINDS = ("user", "item", "taste")


class StoreUnavailable(HarmonyError):
    """The store could not answer for now (a node down, overloaded or timing out): what the projector
    asked may simply be asked again (its writes are safe to apply twice, its commit is compared)."""


class Review(msgspec.Struct, frozen=True):
    """A user's current review of a movie, as the read side serves it."""

    movie_id: str
    rating: float
    summary: str
    text: str
    reviewed_at: datetime
    event_id: str


class ReviewRow(Review, frozen=True, kw_only=True):
    """A current review with whose it is, as the store keeps it."""

    user_id: str


class RatingCount(msgspec.Struct, frozen=True):
    """How many current reviews give a movie this rating."""

    rating: float
    count: int


class Movie(msgspec.Struct, frozen=True):
    """A movie's catalogue entry and review statistics, as the read side serves it."""

    movie_id: str
    title: str | None
    year: int | None
    genres: list[str]
    review_count: int
    mean_rating: float | None
    ratings: list[RatingCount] = []  # the histogram: each rating given, lowest first, with its count


# Which time of an event `as_of` compares: when the log recorded it, or when it occurred (a
# submission's occurred_at is when the review was written; an import keeps the original date).
Clock = Literal["recorded", "occurred"]


class HistoryRow(msgspec.Struct, frozen=True):
    """One event about a user's reviews, as the audit trail keeps it."""

    user_id: str
    event_id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    partition: int
    offset: int
    payload: dict


class CatalogueEntry(msgspec.Struct, frozen=True):
    movie_id: str
    title: str
    year: int | None
    genres: list[str]
    image_url: str | None


class AccountRow(msgspec.Struct, frozen=True):
    """An opening of an account, as the accounts view keeps the one that holds its user id."""

    user_id: str
    event_id: str
    password_hash: str
    partition: int  # its log position in the accounts topic: the lowest holds the id
    offset: int
    skeleton: str  # what the user id looks like (projections.accounts.skeleton)
    subject: str | None = None  # the subject it was sealed under (None: in clear)


class Changes(msgspec.Struct):
    """The net effect of one batch of events.

    The changes are folded on top of the checkpoint `since`, and a store commits them only while
    its checkpoint is still that (compare-and-set): a batch applied twice, or an older batch after
    a newer one (two workers overlapping in a rebalance, a rebuild swapping views in), is refused
    and folded again. Every row change also carries its version, the log offset of the event behind
    it (a user's and a movie's events share one partition, so offsets order them): a store that
    writes rows before its compare-and-set (no transaction across tables) keeps only the newest
    version of each row, so a refused batch's rows change nothing either.
    """

    since: dict[int, int] = {}  # the checkpoint the batch was folded on, as `checkpoint()` answered it
    reviews: dict[ReviewKey, tuple[int, ReviewRow | None]] = {}  # (version, row); None: retracted
    catalogue: dict[str, tuple[int, CatalogueEntry]] = {}  # movie_id -> (version, entry)
    history: list[HistoryRow] = []
    subjects: dict[str, str] = {}  # subject -> user id, of the sealed events the batch holds
    # Subjects forgotten in the batch: after the rows above, every row of their users goes (their
    # reviews, history, account), and the subject's row. Final, so also kept from a refused batch.
    forgotten: list[str] = []
    checkpoint: dict[int, int] = {}  # partition -> last offset the batch covers


class ModelInfo(msgspec.Struct, frozen=True):
    """A model-registry row: one trained, published model version."""

    version: str
    trained_at: datetime
    watermark: dict[int, int]  # partition -> last archived offset the training data included
    metrics: dict
    params: dict
    mu: float  # the global mean of the ratings, the one bias that is not per user or item
    rank: int
    artefacts: str  # where the full artefacts are (an s3:// URI)


class FactorRow(msgspec.Struct, frozen=True):
    """A user's or a movie's published bias and factor vector (float32, little-endian bytes), and
    the number of training ratings behind it."""

    id: str
    bias: float
    vector: bytes
    count: int = 0


class ProjectionWriter(Protocol):
    """What the projector needs: where it is, what it applied, and applying a batch."""

    def checkpoint(self) -> dict[int, int]:
        """partition -> last offset applied."""

    def first_applied(self, events: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
        """Where each of these (key, event id) was first applied, as (partition, offset), for those
        applied at all. An event id counts once, at its first position in the log: a later copy (a
        retried command, a re-import) is skipped, and the same record applied again is not a copy.
        A re-sent event has its first sending's key, so a store may look an id up by key."""

    def apply(self, changes: Changes) -> bool:
        """Commit the changes and move the checkpoint forward to cover them, compared-and-set per
        log partition: each partition the batch covers commits only if its stored offset is still
        `changes.since`'s. Answer True if every partition committed; False if any was refused (a
        store may commit the others: partitions share no rows), with nothing changed that readers
        see for a refused one: fold again. The checkpoint is written after the rows it covers (or
        with them)."""

    def record_lag(self, lags: list[PartitionLag]) -> None: ...


class ReadModels(Protocol):
    """What the API reads."""

    def user_reviews(self, user_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        """Newest first by (reviewed_at, movie_id); `after` is the last row's sort key."""

    def user_ratings(self, user_id: str) -> dict[str, float]:
        """Every current rating of the user: movie id -> rating (what matching folds in)."""

    def movie(self, movie_id: str) -> Movie | None:
        """The catalogue entry with the count, mean and histogram of the current reviews; None if
        neither."""

    def movie_reviews(self, movie_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        """The movie's current reviews, newest first by (reviewed_at, user_id); `after` is the last
        row's sort key."""

    def reviewers(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids of users with a current review whose id, casefolded, starts with
        `prefix` casefolded; ordered by the casefolded id, then the id. An empty prefix (casefolded)
        finds none: an index slice needs a first character."""

    def catalogue(self) -> list[CatalogueEntry]:
        """Every catalogue entry, in no particular order (matching loads it once per model)."""

    def catalogue_entries(self, movie_ids: list[str]) -> list[CatalogueEntry]:
        """The catalogue entries of these ids (those catalogued), in no particular order."""

    def titled(self, words: list[str], whole: bool) -> list[CatalogueEntry]:
        """Catalogue entries whose title, folded into words by `projections.titles.folded_words`, has
        for each of `words` a word starting with it (or equal to it, if `whole`). It may answer
        more (a store may still know words of an entry's older title): the caller checks."""

    def genres(self) -> list[str]:
        """Every genre a catalogue entry has had, sorted."""

    def user_history(
        self, user_id: str, limit: int, before: tuple[int, int] | None, as_of: datetime | None,
        clock: Clock = "recorded",
    ) -> list[HistoryRow]:
        """The user's review events, newest first (by log position); `before` is the last row's
        (partition, offset); `as_of` keeps events whose `clock` time (`recorded_at`, or with
        "occurred" `occurred_at`) is at or before it; limit 0 means all."""

    def review_events_before(self, user_id: str, movie_ids: list[str], before: tuple[int, int],
                             as_of: datetime | None, clock: Clock = "recorded") -> dict[str, str]:
        """For each of these movies, the type of the user's newest review event of it before the log
        position `before` (its `clock` time at or before `as_of`), for those with one: what a page of
        the audit trail needs to tell a replacement from a first review without reading older pages."""

    def user_event(self, user_id: str, event_id: str) -> HistoryRow | None:
        """The user's review event with this id, if applied (how a retried command finds its first sending)."""

    def lag(self) -> list[PartitionLag]: ...

    def lag_reported_at(self) -> datetime | None:
        """When the projector last recorded its lag (the newest `record_lag`); None if it never did."""

    def ping(self) -> None:
        """Raise if the store cannot answer."""


class AccountsView(Protocol):
    """The accounts topic folded: the opening at the lowest log position holds a user id. Written
    by its own projector, with a checkpoint of its own; rebuilds and swaps leave it alone."""

    def put_accounts(self, openings: list[AccountRow], checkpoint: dict[int, int]) -> None:
        """Keep each opening unless one of its user id at a lower log position is kept (so in any
        order, in any batches, and again: the lowest wins), then move the accounts checkpoint
        (partition -> last offset applied) forward to `checkpoint`, never back."""

    def account(self, user_id: str) -> AccountRow | None: ...

    def accounts_with_skeleton(self, skeleton: str) -> list[str]:
        """The user ids of the accounts whose id has this skeleton (that look alike)."""

    def accounts_checkpoint(self) -> dict[int, int]: ...


class Tally(msgspec.Struct, frozen=True):
    """A key's attempts within their window: how many, and when the oldest was made (seconds since
    the epoch; None if there are none)."""

    count: int
    first: float | None


class Attempts(Protocol):
    """Attempts per key (a client address, a user id: the limits on signing in and opening accounts,
    api/auth.py), counted alike by every API process of a deployment. Each attempt is a fact of its
    own, kept for its window and then forgotten, so counting needs no read-modify-write. Not a view:
    rebuilds and swaps leave them alone."""

    def attempts(self, keys: list[str], at: float) -> list[Tally]:
        """Each key's attempts still in their window at `at` (seconds since the epoch)."""

    def add_attempt(self, keys: list[str], attempt: str, at: float, window: float) -> list[Tally]:
        """Record `attempt` (an id of its own) for each key at `at`, kept `window` seconds, and answer
        each key's attempts, this one included. Strict across processes: the answer counts every
        attempt whose adding finished before this one's did, so of attempts added at once, the k-th
        to be added counts at least k."""

    def drop_attempt(self, keys: list[str], attempt: str) -> None:
        """Take `attempt` back from each key: it is not to count."""

    def clear_attempts(self, key: str) -> None:
        """Forget every attempt of `key`."""


class ModelRegistry(Protocol):
    """What training publishes (and prunes) and matching reads: factors are written first, then a
    version becomes current in one step."""

    def put_factors(self, version: str, kind: str, rows: list[FactorRow]) -> None:
        """Add a batch of `kind` (one of FACTOR_KINDS) factor rows of a version not yet published."""

    def publish_model(self, info: ModelInfo) -> None:
        """Add the registry row and make it the current model, atomically."""

    def model(self, version: str | None = None) -> ModelInfo | None:
        """A version's registry row; None: the current one (None when there is no model)."""

    def factors(self, version: str, kind: str, ids: list[str] | None = None) -> list[FactorRow]:
        """A version's factor rows of `kind` for these ids (those it has), or all of them."""

    def models(self) -> list[ModelInfo]:
        """Every registry row, newest version first (versions sort by when they were trained)."""

    def forget_factors(self, user_id: str) -> None:
        """Delete the user's factor rows from every published version (the user asked to be forgotten)."""

    def drop_model(self, version: str) -> bool:
        """Delete a version's registry row, then its factor rows of every kind (also of a version with
        factor rows and no registry row: a publication that died). False, and nothing deleted, if
        it is the current version. A store without one transaction for both deletes the registry
        row first, so a version is never readable with some of its rows gone."""


class Maintenance(Protocol):
    """What rebuild and verify need. A maintenance command holds the store's lease while it runs
    (`projections.maintenance.lease`), so there is at most one scratch store and one swap at a time."""

    def contents(self) -> dict[str, list[tuple]]:
        """Every view's rows and the checkpoint in a stable order, to compare two stores (verify,
        rebuild checks). Rows of `history` hold (partition, offset) at positions 5 and 6; rows of
        `reviews` start with (user id, movie id), rows of `movies` with the movie id. A store that
        cannot read them at one moment may include changes beyond the checkpoint it answers."""

    def scratch(self, name: str) -> "ProjectionStore":
        """A new, empty throw-away store of the same kind, named `name` plus a random part, removed
        when it is closed. Leftovers of maintenance that died (scratch stores no view lives in) are
        removed first: call it only while holding the lease."""

    def swap_in(self, fresh: "ProjectionStore", views: list[str]) -> None:
        """Replace `views` with those of `fresh`, a scratch store, and the live checkpoint with
        fresh's, at once. The checkpoint may move back (the projector went on while `fresh` was
        folded): batches folded on the old one are refused, and the projector applies the log again
        from fresh's checkpoint, which changes nothing in the views not replaced (every change is
        the state its event leaves, and an event id counts at its first position). Readers see
        the new views within a second."""

    def take_lease(self, holder: str, seconds: float) -> tuple[str, datetime] | None:
        """Take the maintenance lease for `seconds` from now, or renew it if `holder` has it.
        None: `holder` has it now; otherwise who has it and until when (an expired lease is free)."""

    def release_lease(self, holder: str) -> None:
        """Give the lease back, if `holder` has it."""


class ProjectionStore(ProjectionWriter, ReadModels, AccountsView, Attempts, ModelRegistry, Maintenance, Protocol):
    """A store adapter keeps all six; each component asks for the part it uses."""

    def close(self) -> None: ...
