"""A movie's page of the API: its rating histogram, its reviews newest first, movies like it from the
model; and user ids suggested by their start (GET /v1/users)."""

from __future__ import annotations

import numpy as np
import pytest

from api.match import MAX_SIMILAR
from api.reviewers import MAX_PREFIX, MAX_REVIEWERS
from tests.unit.test_match import MOVIES, catalogue, model, ok, problem, publish, retract, review


def test_the_histogram_counts_each_rating_of_the_current_reviews(world):
    client, log, store = world
    for user, rating in [("ana", 4.0), ("ben", 4.0), ("cy", 2.5), ("dee", 5.0)]:
        review(client, log, store, user, "m1", rating)
    review(client, log, store, "dee", "m1", 4.0)  # replaced: 5.0 is gone
    retract(client, log, store, "cy", "m1")
    movie = ok(client.get("/v1/movies/m1"))
    assert movie["ratings"] == [{"rating": 4.0, "count": 3}]
    assert (movie["review_count"], movie["mean_rating"]) == (3, 4.0)


def test_a_movies_reviews_come_newest_first_page_by_page_each_with_its_user(world):
    client, log, store = world
    users = [f"u{k}" for k in range(7)]
    for k, user in enumerate(users):
        review(client, log, store, user, "m1", 0.5 + k * 0.5)
    review(client, log, store, "u2", "m1", 5.0)  # a replacement is the newest now
    review(client, log, store, "ana", "m2", 3.0)  # another movie's review is not among them
    seen, cursor = [], None
    while True:
        page = ok(client.get("/v1/movies/m1/reviews", params={"limit": 3, **({"cursor": cursor} if cursor else {})}))
        assert page["movie_id"] == "m1" and len(page["reviews"]) <= 3
        seen += page["reviews"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert [r["user_id"] for r in seen] == ["u2", "u6", "u5", "u4", "u3", "u1", "u0"]
    assert seen[0]["rating"] == 5.0 and {r["movie_id"] for r in seen} == {"m1"}
    times = [r["reviewed_at"] for r in seen]
    assert times == sorted(times, reverse=True)


def test_reviews_of_an_unknown_movie_are_a_404_and_a_catalogued_one_without_reviews_an_empty_page(world):
    client, log, store = world
    problem(client.get("/v1/movies/nothing/reviews"), 404)
    catalogue(log, store, {"m9": ("Quiet Film", 1999, ("Drama",))})
    assert ok(client.get("/v1/movies/m9/reviews")) == {"movie_id": "m9", "reviews": [], "next_cursor": None}


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"cursor": "not-a-cursor"}])
def test_a_bad_page_request_is_a_400(world, query):
    client, _, _ = world
    problem(client.get("/v1/movies/m1/reviews", params=query), 400)


def test_similar_movies_need_a_model(world):
    client, _, _ = world
    assert "harmony train" in problem(client.get("/v1/movies/m1/similar"), 503)["detail"]


def cosine_neighbours(taste: np.ndarray, k: int) -> list[str]:
    """Every other movie by the cosine of its taste factors with movie k, most alike first, positive only."""
    unit = taste / np.linalg.norm(taste, axis=1, keepdims=True)
    similarity = unit @ unit[k]
    order = [j for j in np.argsort(-similarity, kind="stable") if j != k and similarity[j] > 0]
    return [MOVIES[j] for j in order]


def test_similar_movies_are_the_nearest_by_taste_with_their_catalogue_entries(world):
    client, log, store = world
    published = model()
    expected = cosine_neighbours(published.item_taste, MOVIES.index("m1"))
    catalogue(log, store, {expected[0]: ("Nearest", 1990, ("Drama",))})
    publish(store, published)
    body = ok(client.get("/v1/movies/m1/similar", params={"limit": 5}))
    assert [m["movie_id"] for m in body["movies"]] == expected[:5]
    nearest = body["movies"][0]
    assert (nearest["title"], nearest["year"], nearest["genres"]) == ("Nearest", 1990, ["Drama"])
    similarities = [m["similarity"] for m in body["movies"]]
    assert similarities == sorted(similarities, reverse=True) and all(0 < s <= 1 for s in similarities)
    assert body["model_version"] == store.model().version
    everything = ok(client.get("/v1/movies/m1/similar", params={"limit": MAX_SIMILAR}))["movies"]
    assert [m["movie_id"] for m in everything] == expected  # itself and those unlike it left out


def test_similar_movies_of_a_movie_the_model_does_not_know_is_a_404(world):
    client, _, store = world
    publish(store)
    assert "not in model" in problem(client.get("/v1/movies/unknown/similar"), 404)["detail"]
    problem(client.get("/v1/movies/m1/similar", params={"limit": MAX_SIMILAR + 1}), 400)


def test_reviewers_are_found_by_the_start_of_their_id_case_ignored(world):
    client, log, store = world
    for user in ["Alice", "alan", "Albert", "bob", "al"]:
        review(client, log, store, user, "m1", 4.0)
    assert ok(client.get("/v1/users", params={"prefix": "AL"})) == {
        "prefix": "AL", "users": ["al", "alan", "Albert", "Alice"]}
    assert ok(client.get("/v1/users", params={"prefix": "al", "limit": 2}))["users"] == ["al", "alan"]
    assert ok(client.get("/v1/users", params={"prefix": "zed"}))["users"] == []


def test_a_reviewer_who_retracted_every_review_is_not_suggested(world):
    client, log, store = world
    review(client, log, store, "carla", "m1", 4.0)
    review(client, log, store, "carl", "m1", 4.0)
    retract(client, log, store, "carla", "m1")
    assert ok(client.get("/v1/users", params={"prefix": "car"}))["users"] == ["carl"]


@pytest.mark.parametrize("query", [{}, {"prefix": ""}, {"prefix": "x" * (MAX_PREFIX + 1)}, {"prefix": "a\x00"},
                                   {"prefix": "a", "limit": MAX_REVIEWERS + 1}])
def test_a_bad_reviewer_query_is_a_400(world, query):
    client, _, _ = world
    problem(client.get("/v1/users", params=query), 400)


def test_the_openapi_document_describes_the_new_operations(world):
    client, _, _ = world
    paths = ok(client.get("/openapi.json"))["paths"]
    assert paths["/v1/movies/{movie_id}/reviews"]["get"]["operationId"] == "movie_reviews"
    assert paths["/v1/movies/{movie_id}/similar"]["get"]["operationId"] == "similar_movies"
    assert paths["/v1/users"]["get"]["operationId"] == "reviewers"
