"""Finding movies by title: the store finds the entries that hold the query's words (its title
index, `ReadModels.titled`), and a `TitleIndex` of just those ranks them.

Titles and queries are compared folded: accents dropped, case folded, apostrophes removed, every
other non-word character a word break. A movie matches when each query word is the start of one of
its title's words (so "star wa" finds "Star Wars", and "wars" finds it too, "ars" does not); a query
of one-letter words only matches them as whole words.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from bisect import bisect_left

from projections.store import CatalogueEntry, ReadModels

MIN_PREFIX = 2  # a query of shorter words only matches whole words: "a" alone is not every word starting with a
_WORD = re.compile(r"\w+")
_APOSTROPHES = str.maketrans("", "", "'\u2019\u02bc")
LAST_CHAR = "\U0010ffff"  # sorts after every character: "ab" + it bounds the strings that start with "ab"


def folded_words(text: str) -> list[str]:
    """The words of `text` as search compares them: 'Amélie' -> ['amelie'], "Schindler's" -> ['schindlers']."""
    if not text.isascii():  # most titles are: skip the decomposition
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _WORD.findall(text.casefold().translate(_APOSTROPHES))


def search(store: ReadModels, query: str, first: int, count: int) -> tuple[int, list[CatalogueEntry]]:
    """`TitleIndex.search` over the whole catalogue, reading only the entries that may match: the
    ranking compares matching entries among themselves, so an index of them ranks them alike."""
    terms = list(dict.fromkeys(folded_words(query)))
    if not terms:
        return 0, []
    long = [term for term in terms if len(term) >= MIN_PREFIX]
    candidates = store.titled(long, whole=False) if long else store.titled(terms, whole=True)
    return TitleIndex(candidates).search(query, first, count) if candidates else (0, [])


class TitleIndex:
    """Catalogue entries, findable by the starts of their titles' words; immutable once built."""

    def __init__(self, entries: list[CatalogueEntry]):
        self._entries = entries
        folded = [folded_words(entry.title) for entry in entries]
        self._titles = [" ".join(words) for words in folded]
        postings: dict[str, list[int]] = {}
        for n, words in enumerate(folded):
            for word in dict.fromkeys(words):
                postings.setdefault(word, []).append(n)
        self._words = sorted(postings)
        self._postings = postings
        # The order among titles that match equally well: fewer words first, then alphabetically.
        ordered = sorted(range(len(entries)), key=lambda n: (len(folded[n]), self._titles[n],
                                                             entries[n].year or 0, entries[n].movie_id))
        self._place = [0] * len(entries)
        for place, n in enumerate(ordered):
            self._place[n] = place
        self._alphabetical = sorted(range(len(entries)), key=self._titles.__getitem__)
        self._sorted_titles = [self._titles[n] for n in self._alphabetical]
        self._by_id = {entry.movie_id: entry for entry in entries}

    def __len__(self) -> int:
        return len(self._entries)

    def genres(self) -> list[str]:
        """Every genre of the catalogue, sorted."""
        return sorted({genre for entry in self._entries for genre in entry.genres})

    def entries(self, movie_ids: list[str]) -> list[CatalogueEntry]:
        """The entries of these ids, in their order; ids not catalogued are left out."""
        return [self._by_id[m] for m in movie_ids if m in self._by_id]

    def search(self, query: str, first: int, count: int) -> tuple[int, list[CatalogueEntry]]:
        """How many entries match every word of `query`, and `count` of them from the `first`
        (0-based) in rank order: the whole title, then titles that begin with the query's words,
        then with the query as typed (its last word a start), then titles holding each word whole,
        then the rest; among equals, the earlier the first query word appears, then fewer words,
        then alphabetically."""
        terms = folded_words(query)
        if not terms:
            return 0, []
        found = self._matching(list(dict.fromkeys(terms)))
        if not found:
            return 0, []
        phrase = " ".join(terms)
        same = self._titled(phrase) & found
        words_begin, begins = self._beginning(phrase + " ") & found, self._beginning(phrase) & found
        whole = set.intersection(*(set(self._postings.get(term, ())) for term in terms)) & found
        groups = [same, words_begin, begins - words_begin - same, whole - begins, found - whole - begins]
        page, wanted = [], first + count
        for kind, group in enumerate(groups):
            page += heapq.nsmallest(wanted - len(page), group, key=self._order(kind, terms[0]))
            if len(page) >= wanted:
                break
        return len(found), [self._entries[n] for n in page[first:]]

    def _matching(self, terms: list[str]) -> set[int]:
        long = sorted((term for term in terms if len(term) >= MIN_PREFIX), key=len, reverse=True)  # rarest first
        short = [term for term in terms if len(term) < MIN_PREFIX]
        if not long:  # only short words: whole words
            return set.intersection(*(set(self._postings.get(term, ())) for term in short))
        found: set[int] = set()
        for k, term in enumerate(long):
            start, end = bisect_left(self._words, term), bisect_left(self._words, term + LAST_CHAR)
            hits = set().union(*(self._postings[word] for word in self._words[start:end]))
            found = hits if k == 0 else found & hits
            if not found:
                return found
        # a short word beside longer ones is a word start: the longer ones found few enough to look at each
        starts = [" " + term for term in short]
        return {n for n in found if all(start in " " + self._titles[n] for start in starts)}

    def _titled(self, title: str) -> set[int]:
        """The entries titled exactly `title` (folded)."""
        titles = self._sorted_titles
        start = bisect_left(titles, title)
        return set(self._alphabetical[start:bisect_left(titles, title + "\0", start)])

    def _beginning(self, prefix: str) -> set[int]:
        """The titles that begin with `prefix` (folded)."""
        titles = self._sorted_titles
        start, end = bisect_left(titles, prefix), bisect_left(titles, prefix + LAST_CHAR)
        return set(self._alphabetical[start:end])

    def _order(self, kind: int, lead: str):
        if kind < 3:  # the title begins with the query: its first word is first
            return self._place.__getitem__
        titles, place, lead = self._titles, self._place, " " + lead
        return lambda n: ((" " + titles[n]).find(lead), place[n])
