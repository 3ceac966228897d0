"""Finding movies by title: a read model of the catalogue, kept in memory by whoever serves search.

Titles and queries are compared folded: accents dropped, case folded, apostrophes removed, every
other non-word character a word break. A movie matches when each query word is the start of one of
its title's words (so "star wa" finds "Star Wars", and "wars" finds it too, "ars" does not).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left

from projections.store import CatalogueEntry

_WORD = re.compile(r"\w+")
_APOSTROPHES = str.maketrans("", "", "'\u2019\u02bc")
_LAST_CHAR = "\U0010ffff"  # sorts after every character: "ab" + it bounds the words that start with "ab"


def folded_words(text: str) -> list[str]:
    """The words of `text` as search compares them: 'Amélie' -> ['amelie'], "Schindler's" -> ['schindlers']."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WORD.findall(plain.casefold().translate(_APOSTROPHES))


class TitleIndex:
    """Every catalogue entry, findable by the starts of its title's words; immutable once built."""

    def __init__(self, entries: list[CatalogueEntry]):
        self._entries = entries
        self._titles = [folded_words(entry.title) for entry in entries]
        postings: dict[str, set[int]] = {}
        for n, words in enumerate(self._titles):
            for word in words:
                postings.setdefault(word, set()).add(n)
        self._words = sorted(postings)
        self._postings = postings

    def __len__(self) -> int:
        return len(self._entries)

    def genres(self) -> list[str]:
        """Every genre of the catalogue, sorted."""
        return sorted({genre for entry in self._entries for genre in entry.genres})

    def search(self, query: str) -> list[CatalogueEntry]:
        """The entries matching every word of `query`, best first: the whole title, then titles that
        begin with the query's words, then with the query as typed (its last word a start), then
        titles holding each word whole, then the rest; among equals, the earlier the first word
        appears and the shorter the title, the better."""
        terms = folded_words(query)
        if not terms:
            return []
        found: set[int] | None = None
        for term in dict.fromkeys(terms):
            start, end = bisect_left(self._words, term), bisect_left(self._words, term + _LAST_CHAR)
            hits = set().union(*(self._postings[word] for word in self._words[start:end]))
            found = hits if found is None else found & hits
        return [self._entries[n] for n in sorted(found, key=lambda n: self._rank(n, terms))]

    def _rank(self, n: int, terms: list[str]) -> tuple:
        words, phrase = self._titles[n], " ".join(terms)
        title = " ".join(words)
        kinds = (title == phrase, title.startswith(phrase + " "), title.startswith(phrase),
                 all(term in words for term in terms), True)
        first = next(k for k, word in enumerate(words) if word.startswith(terms[0]))
        return kinds.index(True), first, len(words), title, self._entries[n].year or 0, self._entries[n].movie_id
