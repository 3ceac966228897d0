"""MovieLens ratings and movies, in every layout GroupLens (and RecBole) ship them.

| layout | ratings | movies |
|---|---|---|
| 100K | `u.data` (or `u1.base`...): `user<TAB>item<TAB>rating<TAB>ts` | `u.item`: `id|title|release date|video date|url|19 genre flags` (latin-1); genre names from `u.genre` |
| 1M, 10M | `ratings.dat`: `user::movie::rating::ts` | `movies.dat`: `id::Title (Year)::Genre|Genre` |
| latest, 20M, 25M | `ratings.csv`: `userId,movieId,rating,timestamp` | `movies.csv`: `movieId,title,genres` (quoted titles) |
| RecBole atomic | `ml-100k.inter`: typed header `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float` | `ml-100k.item`: `item_id:token<TAB>movie_title:token_seq<TAB>release_year:token<TAB>class:token_seq` |

PATH is the folder or the ratings file; the movie file is looked for beside it (without
one, only reviews are imported). Titles lose their trailing "(1995)", which becomes `year`;
the genres "unknown" and "(no genres listed)" mean none.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from commands.imports.rows import ImportContext, RowProblem, check_id, is_blank, parse_rating, parse_seconds, text_of
from events.errors import HarmonyError
from events.types import Event

GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
NO_GENRE = {"unknown", "(no genres listed)", ""}
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")
_RELEASE_YEAR = re.compile(r"(\d{4})\s*$")
_RATING_COLUMNS = ("user", "movie", "rating", "timestamp")
# Header names of each rating column, per layout with a header.
_CSV_NAMES = {"userid": "user", "movieid": "movie", "rating": "rating", "timestamp": "timestamp"}
_RECBOLE_NAMES = {"user_id": "user", "item_id": "movie", "rating": "rating", "timestamp": "timestamp"}


def split_title(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); a title without a year stays whole."""
    title = title.strip()
    match = _TITLE_YEAR.match(title)
    if match and match.group(1):
        return match.group(1), int(match.group(2))
    return title, None


def genre_list(names) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in names:
        name = name.strip()
        if name not in NO_GENRE:
            seen.setdefault(name, None)
    return tuple(seen)


def _year(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and 1800 <= int(text) <= 2200 else None


@dataclass(frozen=True)
class MovieLensSource:
    layout: str  # "100k", "dat", "csv" or "recbole"
    ratings: Path
    movies: Path | None
    genres: Path | None = None  # u.genre, 100K only

    name = "movielens"

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.movies, self.ratings) if p is not None]

    @classmethod
    def locate(cls, path: Path) -> "MovieLensSource":
        """Find the ratings file (PATH or in the folder PATH) and the movie file beside it."""
        if path.is_dir():
            candidates = [*sorted(path.glob("*.inter")), path / "u.data", path / "ratings.dat", path / "ratings.csv"]
            ratings = next((c for c in candidates if c.is_file()), None)
            if ratings is None:
                raise HarmonyError(
                    f"no MovieLens ratings in {path}: expected u.data, ratings.dat, ratings.csv or a RecBole *.inter"
                )
        elif path.is_file():
            ratings = path
        else:
            raise HarmonyError(f"{path} does not exist")
        name = ratings.name.removesuffix(".gz")
        folder = ratings.parent
        if name.endswith(".inter"):
            layout, movies = "recbole", folder / (name.removesuffix(".inter") + ".item")
        elif name.endswith(".dat"):
            layout, movies = "dat", folder / "movies.dat"
        elif name.endswith(".csv"):
            layout, movies = "csv", folder / "movies.csv"
        else:
            layout, movies = "100k", folder / "u.item"
        genres = folder / "u.genre" if layout == "100k" else None
        return cls(
            layout, ratings,
            movies if movies.is_file() else None,
            genres if genres is not None and genres.is_file() else None,
        )

    def events(self, context: ImportContext) -> Iterator[Event]:
        """The catalogue first (a small file), then every rating, streamed."""
        if self.movies is None:
            context.note(f"no movie file beside {self.ratings.name}: only reviews were imported")
        else:
            yield from getattr(self, f"_movies_{self.layout}")(context)
        yield from self._ratings(context)

    # -- ratings ---------------------------------------------------------------------------

    def _rating_format(self, header: bytes) -> tuple[Callable[[bytes], list[bytes]], tuple[int, ...], int, bool]:
        """(split a line, the indexes of user/movie/rating/timestamp, the field count, whether line 1 is a header)."""
        if self.layout == "100k":
            return bytes.split, (0, 1, 2, 3), 4, False
        if self.layout == "dat":
            return (lambda line: line.rstrip(b"\r\n").split(b"::")), (0, 1, 2, 3), 4, False
        if self.layout == "csv":
            split = lambda line: line.rstrip(b"\r\n").split(b",")  # noqa: E731 - ids and numbers have no quotes
            if header[:1].isdigit():
                return split, (0, 1, 2, 3), 4, False
            names = [name.strip().strip(b'"').decode("latin-1").lower() for name in split(header)]
            return split, self._columns(names, _CSV_NAMES), len(names), True
        split = lambda line: line.rstrip(b"\r\n").split(b"\t")  # noqa: E731
        names = [name.decode("latin-1").split(":")[0].strip() for name in split(header)]
        return split, self._columns(names, _RECBOLE_NAMES), len(names), True

    def _columns(self, names: list[str], known: dict[str, str]) -> tuple[int, ...]:
        where = {known[name]: index for index, name in enumerate(names) if name in known}
        missing = [column for column in _RATING_COLUMNS if column not in where]
        if missing:
            raise HarmonyError(f"{self.ratings.name}: no {', '.join(missing)} column in the header {names}")
        return tuple(where[column] for column in _RATING_COLUMNS)

    def _ratings(self, context: ImportContext) -> Iterator[Event]:
        file = self.ratings.name
        review = context.review
        lineno = 0
        split = None
        for lines in context.read_chunks(self.ratings):
            if split is None:
                split, (iu, im, ir, it), width, has_header = self._rating_format(lines[0])
                if has_header:
                    lineno, lines = 1, lines[1:]
            for line in lines:
                lineno += 1
                fields = split(line)
                if len(fields) != width:
                    if not is_blank(line):
                        context.bad(file, lineno, f"expected {width} fields, found {len(fields)}")
                    continue
                try:
                    user = check_id(text_of(fields[iu], "user id"), "user id")
                    movie = check_id(text_of(fields[im], "movie id"), "movie id")
                    rating = parse_rating(fields[ir])
                    seconds = parse_seconds(fields[it])
                    event = review(
                        f"movielens:{user}:{movie}:{seconds}:{rating:g}", user, movie, rating, seconds
                    )
                except RowProblem as problem:
                    context.bad(file, lineno, str(problem))
                    continue
                yield event

    # -- movies ----------------------------------------------------------------------------

    def _movie(self, context: ImportContext, file: str, lineno: int, movie_id: str, title: str,
               year: int | None, genres: tuple[str, ...]) -> Event | None:
        try:
            return context.movie(f"movielens:movie:{movie_id}", movie_id, title, year, genres)
        except RowProblem as problem:
            context.bad(file, lineno, str(problem))
            return None

    def _movies_100k(self, context: ImportContext) -> Iterator[Event]:
        names = GENRES_100K
        if self.genres is not None:
            pairs = [line.rsplit("|", 1) for line in self.genres.read_text("latin-1").splitlines() if line.strip()]
            try:
                by_index = {int(index): name for name, index in pairs}
                names = tuple(by_index[i] for i in range(len(by_index)))
            except (ValueError, KeyError):
                context.note(f"{self.genres.name} is not `name|index` lines: used the standard 19 genres")
                names = GENRES_100K
        file = self.movies.name
        for lineno, line in enumerate(context.read_text(self.movies, ("latin-1",)).splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) != 5 + len(names):
                context.bad(file, lineno, f"expected {5 + len(names)} fields, found {len(fields)}")
                continue
            flags = fields[5:]
            if any(flag not in ("0", "1") for flag in flags):
                context.bad(file, lineno, "genre flags must be 0 or 1")
                continue
            title, year = split_title(fields[1])
            if year is None and (match := _RELEASE_YEAR.search(fields[2])):
                year = _year(match.group(1))
            genres = genre_list(name for name, flag in zip(names, flags) if flag == "1")
            if event := self._movie(context, file, lineno, fields[0].strip(), title, year, genres):
                yield event

    def _movies_dat(self, context: ImportContext) -> Iterator[Event]:
        file = self.movies.name
        for lineno, line in enumerate(context.read_text(self.movies).splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("::")
            if len(fields) != 3:
                context.bad(file, lineno, f"expected 3 fields, found {len(fields)}")
                continue
            title, year = split_title(fields[1])
            if event := self._movie(context, file, lineno, fields[0].strip(), title, year,
                                    genre_list(fields[2].split("|"))):
                yield event

    def _movies_csv(self, context: ImportContext) -> Iterator[Event]:
        file = self.movies.name
        reader = csv.reader(io.StringIO(context.read_text(self.movies), newline=""))
        header = next(reader, None)
        if header is None:
            return
        names = [name.strip().lower() for name in header]
        if not {"movieid", "title"} <= set(names):
            raise HarmonyError(f"{file}: expected a header with movieId,title[,genres], found {header}")
        at = {name: index for index, name in enumerate(names)}
        for row in reader:
            lineno = reader.line_num
            if not row or row == [""]:
                continue
            if len(row) != len(names):
                context.bad(file, lineno, f"expected {len(names)} fields, found {len(row)}")
                continue
            title, year = split_title(row[at["title"]])
            genres = genre_list(row[at["genres"]].split("|")) if "genres" in at else ()
            if event := self._movie(context, file, lineno, row[at["movieid"]].strip(), title, year, genres):
                yield event

    def _movies_recbole(self, context: ImportContext) -> Iterator[Event]:
        file = self.movies.name
        lines = context.read_text(self.movies).splitlines()
        if not lines:
            return
        names = [name.split(":")[0].strip() for name in lines[0].split("\t")]
        at = {name: index for index, name in enumerate(names)}
        if "item_id" not in at or "movie_title" not in at:
            raise HarmonyError(f"{file}: expected item_id and movie_title columns, found {names}")
        for lineno, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(names):
                context.bad(file, lineno, f"expected {len(names)} fields, found {len(fields)}")
                continue
            title, year = split_title(fields[at["movie_title"]])
            if "release_year" in at:
                year = _year(fields[at["release_year"]]) or year
            genres = genre_list(fields[at["class"]].split(" ")) if "class" in at else ()
            if event := self._movie(context, file, lineno, fields[at["item_id"]].strip(), title, year, genres):
                yield event
