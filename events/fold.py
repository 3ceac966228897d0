"""The one fold of review events: what a sequence of them leaves as each user's current reviews.

The projector, `as_of` history and the Spark replay all fold through `ReviewFold`, so they agree
on the rules:

* a log position counts once (reads of a partition may overlap after a rebalance or a restart);
* an event id counts once (a retried command may append the same event again);
* a `ReviewSubmitted` replaces the (user, movie)'s review; a `ReviewRetracted` removes it.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

from events.types import Event, ReviewEvent, ReviewSubmitted

ReviewKey = tuple[str, str]  # (user_id, movie_id)
Kept = TypeVar("Kept")


class ReviewFold(Generic[Kept]):
    """Folds events in log order. `keep` picks what to remember of a submitted review (the replay
    keeps only the rating); `reviews` maps each key the fold changed to it, None when retracted,
    in the order of their last change."""

    def __init__(self, keep: Callable[[ReviewSubmitted], Kept], checkpoint: dict[int, int] | None = None,
                 seen: Iterable[str] = ()):
        self.keep = keep
        self.checkpoint = dict(checkpoint or {})  # partition -> last offset taken
        self.seen = set(seen)
        self.reviews: dict[ReviewKey, Kept | None] = {}

    def take(self, partition: int, offset: int) -> bool:
        """Move past a log position; False when it was taken before."""
        if offset <= self.checkpoint.get(partition, -1):
            return False
        self.checkpoint[partition] = offset
        return True

    def apply(self, event: Event) -> bool:
        """Fold one event; False when its id was folded before. Events that are not about a
        review count as seen and change no review."""
        if event.event_id in self.seen:
            return False
        self.seen.add(event.event_id)
        if isinstance(event, ReviewEvent):
            key = (event.user_id, event.movie_id)
            self.reviews.pop(key, None)  # re-inserted last: the order of last change
            self.reviews[key] = self.keep(event) if isinstance(event, ReviewSubmitted) else None
        return True

    def current(self) -> dict[ReviewKey, Kept]:
        """The reviews standing after the fold (among those it changed), oldest change first."""
        return {key: kept for key, kept in self.reviews.items() if kept is not None}
