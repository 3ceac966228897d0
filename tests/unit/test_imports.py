"""The importers' parsers, on generated files of every supported layout (no broker needed)."""

from __future__ import annotations

import argparse
import gzip
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from commands.imports import open_source
from commands.imports.cli import run as cli_run
from commands.imports.movielens import split_title
from commands.imports.rows import IMPORT_NAMESPACE, MAX_EXAMPLES, BadRowError, ImportContext, event_id
from events.codec import decode, encode
from events.errors import HarmonyError
from events.types import MovieCatalogued, ReviewSubmitted
from harmony.bootstrap import log_config
from harmony.cli import main
from harmony.settings import load

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def parse(kind: str, path: Path, strict: bool = False) -> tuple[list, ImportContext]:
    context = ImportContext(kind, strict=strict, recorded_at=NOW)
    events = list(open_source(kind, path).events(context))
    for event in events:  # everything built passes the decoder's checks, as the projector will apply it
        assert decode(encode(event)) == event
    return events, context


def split(events) -> tuple[list[MovieCatalogued], list[ReviewSubmitted]]:
    return ([e for e in events if isinstance(e, MovieCatalogued)], [e for e in events if isinstance(e, ReviewSubmitted)])


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


@pytest.fixture
def ml100k(tmp_path) -> Path:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    (folder / "u.item").write_bytes(
        "\n".join([
            f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{flags('Comedy')}",
            f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{flags('Crime', 'Film-Noir', 'Mystery', 'Thriller')}",
            f"377|Heavyweights (1994)|01-Jan-1994||http://x|{flags('Children', 'Comedy')}",
            f"267|unknown||||{flags('unknown')}",
            f"1300|Caf\u00e9 Society|12-Mar-1999||http://x|{flags('Drama')}",
        ]).encode("latin-1") + b"\n"
    )
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    return folder


def test_event_ids_are_uuid5_of_the_natural_key():
    for key in ["movielens:196:242:881250949:3", "amazon:A1:B2:3:5", "\u00fc" * 300, ""]:
        assert event_id(key) == str(uuid.uuid5(IMPORT_NAMESPACE, key))


@pytest.mark.parametrize("title,expected", [
    ("Toy Story (1995)", ("Toy Story", 1995)),
    ("City of Lost Children, The (Cit\u00e9 des enfants perdus, La) (1995)",
     ("City of Lost Children, The (Cit\u00e9 des enfants perdus, La)", 1995)),
    ("Babylon 5 (1994-1998) ", ("Babylon 5", 1994)),
    ("unknown", ("unknown", None)),
    ("(1995)", ("(1995)", None)),
])
def test_split_title(title, expected):
    assert split_title(title) == expected


def test_movielens_100k_folder(ml100k):
    events, context = parse("movielens", ml100k)
    movies, reviews = split(events)
    assert events[: len(movies)] == movies  # the catalogue comes first
    by_id = {m.movie_id: m for m in movies}
    assert (by_id["242"].title, by_id["242"].year, by_id["242"].genres) == ("Kolya", 1996, ("Comedy",))
    assert by_id["302"].genres == ("Crime", "Film-Noir", "Mystery", "Thriller")
    assert (by_id["267"].title, by_id["267"].year, by_id["267"].genres) == ("unknown", None, ())
    assert (by_id["1300"].title, by_id["1300"].year) == ("Caf\u00e9 Society", 1999)  # latin-1, year from the date
    assert by_id["242"].event_id == event_id("movielens:movie:242")
    assert by_id["242"].key == "movie:242"

    first = reviews[0]
    assert (first.user_id, first.movie_id, first.rating, first.source) == ("196", "242", 3.0, "movielens")
    assert first.occurred_at == first.reviewed_at == at(881250949)
    assert first.recorded_at == NOW
    assert first.event_id == event_id("movielens:196:242:881250949:3")
    assert first.key == "196"
    assert [r.rating for r in reviews] == [3.0, 3.0, 1.0]
    stats = context.stats
    assert (stats.reviews, stats.movies, stats.bad_rows) == (3, 5, 0)
    assert stats.bytes_read == sum(p.stat().st_size for p in (ml100k / "u.data", ml100k / "u.item"))


def test_same_file_same_event_ids_whatever_the_import_time(ml100k):
    first, _ = parse("movielens", ml100k)
    context = ImportContext("movielens", recorded_at=datetime(2030, 1, 1, tzinfo=timezone.utc))
    again = list(open_source("movielens", ml100k).events(context))
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert first[0].recorded_at != again[0].recorded_at


def test_ratings_file_path_finds_the_movies_beside_it_and_the_standard_genres(ml100k):
    (ml100k / "u.genre").unlink()
    (ml100k / "u1.base").write_text("1\t242\t5\t874965758\n")
    events, context = parse("movielens", ml100k / "u1.base")
    movies, reviews = split(events)
    assert len(movies) == 5 and movies[1].genres == ("Crime", "Film-Noir", "Mystery", "Thriller")
    assert [(r.user_id, r.rating) for r in reviews] == [("1", 5.0)]


def test_bad_rows_are_counted_and_the_first_ones_reported_by_line(ml100k):
    (ml100k / "u.data").write_text(
        "196\t242\t3\t881250949\n"  # 1 ok
        "186\t302\t7\t891717742\n"  # 2 rating out of range
        "186\t302\t3.3\t891717742\n"  # 3 not a half step
        "\n"  # 4 blank: ignored
        "22\t377\n"  # 5 too few fields
        "22\t377\tfive\t878887116\n"  # 6 rating not a number
        "22\t377\t2\tyesterday\n"  # 7 timestamp not a number
        "22\t377\t2\t99999999999\n"  # 8 in the future
        "244\t51\t2\t880606923\n"  # 9 ok
        "166\t346\t0\t886397596\n"  # 10 rating 0
    )
    events, context = parse("movielens", ml100k)
    _, reviews = split(events)
    assert [(r.user_id, r.movie_id) for r in reviews] == [("196", "242"), ("244", "51")]
    stats = context.stats
    assert stats.bad_rows == 7
    assert len(stats.examples) == MAX_EXAMPLES
    assert [(row.file, row.line) for row in stats.examples] == [("u.data", n) for n in (2, 3, 5, 6, 7)]
    assert "rating 7 is not 0.5 to 5 in half steps" in stats.examples[0].reason
    assert "expected 4 fields, found 2" in stats.examples[2].reason
    assert "timestamp" in stats.examples[4].reason
    assert str(stats.examples[0]).startswith("u.data line 2: ")


def test_strict_stops_at_the_first_bad_row(ml100k):
    (ml100k / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\n22\t377\t9\t878887116\n")
    with pytest.raises(BadRowError) as raised:
        parse("movielens", ml100k, strict=True)
    assert (raised.value.row.file, raised.value.row.line) == ("u.data", 2)


def test_bad_movie_rows_are_reported_too(ml100k):
    (ml100k / "u.item").write_text(f"1|Toy Story (1995)|01-Jan-1995||x|{flags('Comedy')}\n2|Short row|x\n")
    events, context = parse("movielens", ml100k)
    assert len(split(events)[0]) == 1
    assert [(r.file, r.line) for r in context.stats.examples] == [("u.item", 2)]


def test_movielens_1m_dat_with_half_stars(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3.5::978302109\n2::3408::0.5::978298413\n"
                                          "2::1::4::\n")
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "3408::Erin Brockovich (2000)::(no genres listed)\n"
        "661::Am\u00e9lie (2001)::Comedy|Romance\n".encode("latin-1")
    )
    events, context = parse("movielens", tmp_path)
    movies, reviews = split(events)
    assert [(m.movie_id, m.title, m.year, m.genres) for m in movies] == [
        ("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy")),
        ("1193", "One Flew Over the Cuckoo's Nest", 1975, ("Drama",)),
        ("3408", "Erin Brockovich", 2000, ()),
        ("661", "Am\u00e9lie", 2001, ("Comedy", "Romance")),
    ]
    assert [(r.user_id, r.movie_id, r.rating) for r in reviews] == [("1", "1193", 5.0), ("1", "661", 3.5),
                                                                     ("2", "3408", 0.5)]
    assert reviews[1].event_id == event_id("movielens:1:661:978302109:3.5")
    assert [(r.file, r.line) for r in context.stats.examples] == [("ratings.dat", 4)]


def test_movielens_csv_with_quoted_titles(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n1,50,abc,964982931\n2,2,5.0,964982224\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n'
        '1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n'
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        '3,"Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)",Comedy|War\n'
        '4,Nostalgia (no year),(no genres listed)\n'
    )
    events, context = parse("movielens", tmp_path / "ratings.csv")
    movies, reviews = split(events)
    assert [(m.movie_id, m.title, m.year) for m in movies] == [
        ("1", "Toy Story", 1995), ("2", "American President, The", 1995),
        ("3", "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb", 1964),
        ("4", "Nostalgia (no year)", None),
    ]
    assert movies[1].genres == ("Comedy", "Drama", "Romance") and movies[3].genres == ()
    assert [(r.user_id, r.movie_id, r.rating) for r in reviews] == [("1", "1", 4.0), ("1", "3", 4.5), ("2", "2", 5.0)]
    # Same review, other notation: same id as in u.data ("4") or ratings.dat.
    assert reviews[0].event_id == event_id("movielens:1:1:964982703:4")
    assert [(r.file, r.line) for r in context.stats.examples] == [("ratings.csv", 4)]


def test_ratings_without_a_movie_file_import_reviews_only(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n7,8,2.5,964982703\n")
    events, context = parse("movielens", tmp_path)
    assert [type(e) for e in events] == [ReviewSubmitted]
    assert any("no movie file" in note for note in context.stats.notes)


def test_recbole_atomic_files(tmp_path):
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
    )
    (tmp_path / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n"
        "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
        "267\tunkonwn\tunkonwn\tunknown\n"
    )
    (tmp_path / "ml-100k.user").write_text("user_id:token\tage:float\n196\t49\n")
    events, _ = parse("movielens", tmp_path)
    movies, reviews = split(events)
    assert [(m.movie_id, m.title, m.year, m.genres) for m in movies] == [
        ("242", "Kolya", 1996, ("Comedy",)),
        ("302", "L.A. Confidential", 1997, ("Crime", "Film-Noir", "Mystery", "Thriller")),
        ("267", "unkonwn", None, ()),
    ]
    # The same rating as in u.data gets the same event id: re-importing from the other layout adds nothing.
    assert reviews[0].event_id == event_id("movielens:196:242:881250949:3")
    # The .inter file's header columns are found by name, in any order.
    (tmp_path / "ml-100k.inter").write_text("item_id:token\ttimestamp:float\tuser_id:token\trating:float\n"
                                            "242\t881250949\t196\t3\n")
    events, _ = parse("movielens", tmp_path / "ml-100k.inter")
    assert split(events)[1][0].event_id == reviews[0].event_id


def amazon_row(**fields) -> str:
    row = {"overall": 5.0, "verified": True, "reviewTime": "11 23, 2008", "reviewerID": "A3TS9EQCNLU0SM",
           "asin": "0005092663", "style": {"Format:": " DVD"}, "reviewerName": "Amazon Customer",
           "reviewText": "Watch this.", "summary": "Excellent Viewing", "unixReviewTime": 1227398400}
    row.update(fields)
    return json.dumps({k: v for k, v in row.items() if v is not ...})


def test_amazon_json_lines(tmp_path):
    path = tmp_path / "Movies_and_TV_5.json"
    path.write_text("\n".join([
        amazon_row(),
        amazon_row(reviewerID="B2", overall=4, reviewText=..., summary=None),  # missing text
        amazon_row(reviewerID="B3", reviewText="x" * 25_000, summary="s" * 400),  # truncated
        amazon_row(reviewerID="B4", asin=...),  # missing asin
        '{"reviewerID": "B5", "asin": ',  # not JSON
        amazon_row(reviewerID="B6", overall=0.0),  # bad rating
        amazon_row(reviewerID="B7", overall="five"),  # wrong type
        "",
    ]) + "\n")
    events, context = parse("amazon", path)
    assert all(isinstance(e, ReviewSubmitted) for e in events)
    assert [e.user_id for e in events] == ["A3TS9EQCNLU0SM", "B2", "B3"]
    first = events[0]
    assert (first.movie_id, first.rating, first.summary, first.text, first.source) == (
        "0005092663", 5.0, "Excellent Viewing", "Watch this.", "amazon")
    assert first.reviewed_at == first.occurred_at == at(1227398400)
    assert first.event_id == event_id("amazon:A3TS9EQCNLU0SM:0005092663:1227398400:5")
    assert (events[1].rating, events[1].text, events[1].summary) == (4.0, "", "")
    assert (len(events[2].text), len(events[2].summary)) == (20_000, 300)
    stats = context.stats
    assert (stats.truncated_texts, stats.truncated_summaries) == (1, 1)
    assert stats.bad_rows == 4
    assert [r.line for r in stats.examples] == [4, 5, 6, 7]
    assert "asin" in stats.examples[0].reason
    assert "not JSON" in stats.examples[1].reason
    assert "rating 0 is not 0.5 to 5" in stats.examples[2].reason


def test_amazon_gzip_and_folder(tmp_path):
    folder = tmp_path / "amazon"
    folder.mkdir()
    with gzip.open(folder / "a.json.gz", "wt") as out:
        out.write(amazon_row(reviewerID="G1") + "\n" + amazon_row(reviewerID="G2", overall=3.0) + "\n")
    (folder / "b.jsonl").write_text(amazon_row(reviewerID="P1") + "\n")
    (folder / "notes.txt").write_text("not reviews")
    events, context = parse("amazon", folder)
    assert [(e.user_id, e.rating) for e in events] == [("G1", 5.0), ("G2", 3.0), ("P1", 5.0)]
    assert context.stats.bytes_read == sum(p.stat().st_size for p in (folder / "a.json.gz", folder / "b.jsonl"))
    single, _ = parse("amazon", folder / "a.json.gz")
    assert [e.event_id for e in single] == [e.event_id for e in events[:2]]


def test_missing_inputs_are_one_readable_error(tmp_path):
    with pytest.raises(HarmonyError, match="does not exist"):
        open_source("movielens", tmp_path / "nope")
    with pytest.raises(HarmonyError, match="no MovieLens ratings"):
        open_source("movielens", tmp_path)
    with pytest.raises(HarmonyError, match="no Amazon review files"):
        open_source("amazon", tmp_path)


def test_cli_without_a_broker_fails_in_one_line(tmp_path, monkeypatch, capsys, ml100k):
    monkeypatch.setenv("HARMONY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("HARMONY_KAFKA_BOOTSTRAP", raising=False)
    assert main(["import", "movielens", str(ml100k), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "no broker" in captured.err


def test_cli_bad_path_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARMONY_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    args = argparse.Namespace(source="amazon", path=str(tmp_path / "missing.json"), strict=False, json=False)
    assert cli_run(log_config(load()), None, args) == 1  # fails before anything is sealed
    assert capsys.readouterr().err.strip().startswith("harmony import: ")
