"""The one fold of review events: what a sequence of them leaves as each user's current reviews.

The projector, `as_of` history and the Spark replay all fold through `ReviewFold`, so they agree
on the rules:

* a log position counts once (reads of a partition may overlap after a rebalance or a restart);
* an event id counts once, at its first position (a retried command may append the same event
  again; the same record read again is not a copy);
* a `ReviewSubmitted` replaces the (user, movie)'s review; a `ReviewRetracted` removes it;
* a `MovieCatalogued` is a state, not a change: the newest by log position wins, copies included
  (a re-import of a changed catalogue keeps its event ids).
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from events.types import Event, MovieCatalogued, ReviewEvent, ReviewSubmitted

ReviewKey = tuple[str, str]  # (user_id, movie_id)
Position = tuple[int, int]  # (partition, offset)
Kept = TypeVar("Kept")


class ReviewFold(Generic[Kept]):
    """Folds events in log order. `keep` picks what to remember of a submitted review (the replay
    keeps only the rating); `reviews` maps each key the fold changed to the offset of its last
    change and what was kept, None when retracted, in the order of their last change."""

    def __init__(self, keep: Callable[[ReviewSubmitted], Kept], checkpoint: dict[int, int] | None = None,
                 first: dict[str, Position] | None = None):
        self.keep = keep
        self.checkpoint = dict(checkpoint or {})  # partition -> last offset taken
        self.first = dict(first or {})  # event id -> the position it was first applied at
        self.reviews: dict[ReviewKey, tuple[int, Kept | None]] = {}
        self.at: Position = (-1, -1)  # the position last taken

    def take(self, partition: int, offset: int) -> bool:
        """Move past a log position; False when it was taken before."""
        if offset <= self.checkpoint.get(partition, -1):
            return False
        self.checkpoint[partition] = offset
        self.at = (partition, offset)
        return True

    def apply(self, event: Event) -> bool:
        """Fold the event at the position last taken; False when it is a copy of one applied at an
        earlier position. Events that are not about a review change no review."""
        if not isinstance(event, MovieCatalogued) and self.first.setdefault(event.event_id, self.at) != self.at:
            return False
        if isinstance(event, ReviewEvent):
            key = (event.user_id, event.movie_id)
            self.reviews.pop(key, None)  # re-inserted last: the order of last change
            self.reviews[key] = (self.at[1], self.keep(event) if isinstance(event, ReviewSubmitted) else None)
        return True

    def current(self) -> dict[ReviewKey, Kept]:
        """The reviews standing after the fold (among those it changed), oldest change first."""
        return {key: kept for key, (_, kept) in self.reviews.items() if kept is not None}
