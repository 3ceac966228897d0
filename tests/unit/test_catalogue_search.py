"""Finding movies by title: the index (projections/titles.py) and GET /v1/movies over a real SQLite
store, the catalogue projected from catalogue events."""

from __future__ import annotations

import pytest

from projections.store import CatalogueEntry
from projections.titles import TitleIndex, folded_words
from tests.unit.fakes import bearer
from tests.unit.test_api import is_problem
from tests.unit.test_match import catalogue

MOVIES = {
    "sw": ("Star Wars", 1977, ("Action", "Sci-Fi")),
    "sk": ("Star Kid", 1997, ("Adventure",)),
    "st": ("Star Trek: First Contact", 1996, ("Sci-Fi",)),
    "ls": ("Lone Star", 1996, ("Drama",)),
    "am": ("Amélie", 2001, ("Comedy", "Romance")),
    "sl": ("Schindler's List", 1993, ("Drama", "War")),
    "cc": ("Ça commence aujourd'hui", 1999, ("Drama",)),
    "wr": ("Wars of the Roses, The", 1989, ("Comedy",)),
    "st2": ("Starship Troopers", 1997, ("Sci-Fi", "War")),
    "ab": ("A Bug's Life", 1998, ("Animation",)),
}


def entries() -> list[CatalogueEntry]:
    return [CatalogueEntry(m, title, year, list(genres), None) for m, (title, year, genres) in MOVIES.items()]


def found(query: str) -> list[str]:
    total, page = TitleIndex(entries()).search(query, 0, 100)
    assert total == len(page)
    return [entry.movie_id for entry in page]


def test_folding_drops_accents_case_and_apostrophes():
    assert folded_words("Amélie") == ["amelie"]
    assert folded_words("SCHINDLER'S  list!") == ["schindlers", "list"]
    assert folded_words("Ça commence aujourd\u2019hui") == ["ca", "commence", "aujourdhui"]
    assert folded_words(" -- ") == []


def test_a_prefix_finds_titles_with_a_word_that_starts_so_whole_titles_and_title_starts_first():
    assert found("star wars") == ["sw"]
    # "star" is the whole first word of three titles, the start of another's first word, a later word of one
    assert found("star") == ["sk", "sw", "st", "st2", "ls"]
    assert found("sta") == ["sk", "sw", "st2", "st", "ls"]
    assert found("wars") == ["wr", "sw"]  # a title that begins with it first
    assert found("ars") == []
    assert found("a") == found("a bu") == ["ab"]  # one letter: that word only, not every word it starts
    assert found("s") == []


def test_a_page_of_the_ranking_is_that_part_of_the_whole_ranking():
    index = TitleIndex(entries())
    whole = index.search("st", 0, 100)[1]
    assert [index.search("st", n, 2) for n in range(0, 6, 2)] == [(5, whole[n:n + 2]) for n in range(0, 6, 2)]


def test_every_word_must_match_in_any_order():
    assert found("wars star") == ["sw"]
    assert found("star contact") == ["st"]
    assert found("star drama") == []
    assert found("the roses") == ["wr"]


def test_accents_and_case_do_not_matter_either_way():
    assert found("AMELIE") == found("amélie") == found("Amel") == ["am"]
    assert found("ça") == found("CA COMM") == ["cc"]
    assert found("schindlers") == found("Schindler's") == ["sl"]


def test_genres_are_every_genre_of_the_catalogue():
    index = TitleIndex(entries())
    assert index.genres() == ["Action", "Adventure", "Animation", "Comedy", "Drama", "Romance", "Sci-Fi", "War"]
    assert [e.title for e in index.entries(["am", "nope", "sw"])] == ["Amélie", "Star Wars"]


@pytest.fixture
def catalogued(world):
    client, log, store = world
    catalogue(log, store, MOVIES)
    return client


def test_search_answers_titled_entries_best_first(catalogued):
    body = catalogued.get("/v1/movies", params={"q": "Star W"}).json()
    assert body["query"] == "Star W" and body["total"] == 1 and body["next_cursor"] is None
    assert body["movies"] == [{"movie_id": "sw", "title": "Star Wars", "year": 1977,
                               "genres": ["Action", "Sci-Fi"], "image_url": None}]
    assert [m["movie_id"] for m in catalogued.get("/v1/movies", params={"q": "ÉLIE"}).json()["movies"]] == []
    assert [m["movie_id"] for m in catalogued.get("/v1/movies", params={"q": "amÉL"}).json()["movies"]] == ["am"]


def test_search_pages_walk_every_match_once(catalogued):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"q": "st", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = catalogued.get("/v1/movies", params=params).json()
        assert body["total"] == 5 and len(body["movies"]) <= 2
        seen += [m["movie_id"] for m in body["movies"]]
        pages += 1
        if not (cursor := body["next_cursor"]):
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 5
    whole = catalogued.get("/v1/movies", params={"q": "st", "limit": 50}).json()["movies"]
    assert seen == [m["movie_id"] for m in whole]


def test_no_match_is_an_empty_page(catalogued):
    assert catalogued.get("/v1/movies", params={"q": "zzz"}).json() == {
        "query": "zzz", "total": 0, "movies": [], "next_cursor": None}


@pytest.mark.parametrize("params", [
    {}, {"q": ""}, {"q": "   "}, {"q": "x" * 101}, {"q": "?!"}, {"q": "star", "limit": 0}, {"q": "star", "limit": 51},
    {"q": "star", "cursor": "not-a-cursor"}, {"q": "star", "cursor": "Wy0xXQ=="},  # [-1]
])
def test_empty_over_long_and_bad_queries_are_400_problems(catalogued, params):
    is_problem(catalogued.get("/v1/movies", params=params), 400)


def test_a_longest_query_is_served(catalogued):
    assert catalogued.get("/v1/movies", params={"q": "star " * 20}).status_code == 200


def test_a_catalogued_movie_is_found_once_projected_and_a_retitled_one_by_its_new_title_only(world):
    client, log, store = world
    catalogue(log, store, {"sw": MOVIES["sw"]})
    assert client.get("/v1/movies", params={"q": "heat"}).json()["total"] == 0
    catalogue(log, store, {"h": ("Heat", 1995, ("Crime",))})
    assert [m["title"] for m in client.get("/v1/movies", params={"q": "heat"}).json()["movies"]] == ["Heat"]
    catalogue(log, store, {"h": ("Ronin", 1998, ("Crime",))})
    assert client.get("/v1/movies", params={"q": "heat"}).json()["total"] == 0
    assert client.get("/v1/movies", params={"q": "ron"}).json()["total"] == 1
    assert client.get("/v1/genres").json() == {"genres": ["Action", "Crime", "Sci-Fi"]}
    assert client.get("/v1/catalogue", params={"ids": "h,nope,sw,h"}).json() == {"movies": [
        {"movie_id": "h", "title": "Ronin", "year": 1998, "genres": ["Crime"], "image_url": None},
        {"movie_id": "sw", "title": "Star Wars", "year": 1977, "genres": ["Action", "Sci-Fi"], "image_url": None},
        {"movie_id": "h", "title": "Ronin", "year": 1998, "genres": ["Crime"], "image_url": None}]}


@pytest.mark.parametrize("ids", [None, "", ",".join(f"m{n}" for n in range(101))])
def test_a_catalogue_lookup_takes_1_to_100_ids(catalogued, ids):
    is_problem(catalogued.get("/v1/catalogue", params={} if ids is None else {"ids": ids}), 400)


def test_strategies_name_the_default_and_describe_each(world):
    body = world[0].get("/v1/strategies").json()
    names = [s["name"] for s in body["strategies"]]
    assert body["default"] in names and "least_misery" in names
    assert all(s["description"] for s in body["strategies"])


def test_a_422_names_the_field_at_fault(world):
    client = world[0]
    body = is_problem(client.post("/v1/reviews", headers=bearer("a"), json={"user_id": "a", "movie_id": "m", "rating": 7}), 422)
    assert body["errors"] == [{"pointer": "#/rating", "detail": "Expected `float` <= 5.0"}]
    body = is_problem(client.post("/v1/reviews", headers=bearer("a"), json={"user_id": "a", "rating": 3}), 422)
    assert body["errors"] == [{"pointer": "#/movie_id", "detail": "movie_id is required"}]
    body = is_problem(client.post("/v1/reviews", headers=bearer("a"), json={"user_id": "a", "movie_id": "m", "rating": 3,
                                                      "reviewed_at": "1800-01-01T00:00:00Z"}), 422)
    assert [e["pointer"] for e in body["errors"]] == ["#/reviewed_at"]
