"""The write path end to end: HTTP -> command -> Kafka -> Faust projector -> SQLite -> HTTP."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from tests.conftest import BOTH_STORES, wait_until

pytestmark = pytest.mark.integration


def all_reviews(client: httpx.Client, user: str) -> dict[str, dict]:
    """Every current review of a user, following the cursor through all pages."""
    found, cursor = {}, None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/users/{user}/reviews", params=params).json()
        found.update({r["movie_id"]: r for r in page["reviews"]})
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def post_all(base_url: str, bodies: list[dict], bearer, concurrency: int = 16) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        async def post(body):
            async with limit:
                return await client.post("/v1/reviews", json=body, headers=bearer(body["user_id"]))

        return await asyncio.gather(*(post(b) for b in bodies))


@BOTH_STORES
def test_thousand_reviews_appear_with_right_values(api, start_worker, bearer):
    start_worker()
    rng = random.Random(7)
    users = [f"user-{i}" for i in range(50)]
    bodies = [
        {"user_id": rng.choice(users), "movie_id": f"movie-{rng.randrange(300)}",
         "rating": rng.randrange(1, 11) / 2, "summary": f"s{i}", "text": f"review number {i}"}
        for i in range(1000)
    ]
    responses = asyncio.run(post_all(str(api.base_url), bodies, bearer))
    assert [r.status_code for r in responses] == [202] * 1000
    # The log order of one user's events is their acknowledgement order: the later offset wins.
    expected: dict[tuple[str, str], dict] = {}
    for body, response in sorted(zip(bodies, responses), key=lambda p: p[1].json()["position"]["offset"]):
        expected[(body["user_id"], body["movie_id"])] = {**body, "event_id": response.json()["event_id"]}

    last = max(responses, key=lambda r: r.json()["position"]["offset"]).json()
    api.get(f"/v1/users/{bodies[0]['user_id']}/reviews", params={"after": last["token"]})

    def views_complete():
        got = {(u, m): r for u in users for m, r in all_reviews(api, u).items()}
        return got if len(got) == len(expected) else None

    got = wait_until(views_complete, 60, "all reviews projected")
    for key, want in expected.items():
        review = got[key]
        assert (review["rating"], review["summary"], review["text"], review["event_id"]) == (
            want["rating"], want["summary"], want["text"], want["event_id"]
        ), key

    # Movie statistics agree with the current reviews.
    movie = "movie-1"
    ratings = [w["rating"] for (u, m), w in expected.items() if m == movie]
    stats = api.get(f"/v1/movies/{movie}").json()
    assert stats["review_count"] == len(ratings)
    assert stats["mean_rating"] == pytest.approx(sum(ratings) / len(ratings))


@BOTH_STORES
def test_resubmission_replaces_and_retraction_removes(api, start_worker, bearer):
    start_worker()
    first = api.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m1", "rating": 2.0}).json()
    second = api.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m1", "rating": 4.5, "summary": "better"})
    api.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m2", "rating": 3.0})
    assert second.status_code == 202
    page = api.get("/v1/users/ana/reviews", params={"after": second.json()["token"]}).json()
    by_movie = {r["movie_id"]: r for r in page["reviews"]}
    assert by_movie["m1"]["rating"] == 4.5 and by_movie["m1"]["summary"] == "better"
    assert by_movie["m1"]["event_id"] != first["event_id"]
    assert api.get("/v1/movies/m1").json()["review_count"] == 1

    retracted = api.delete("/v1/users/ana/reviews/m1", headers=bearer("ana"))
    assert retracted.status_code == 202
    page = api.get("/v1/users/ana/reviews", params={"after": retracted.json()["token"]}).json()
    assert [r["movie_id"] for r in page["reviews"]] == ["m2"]
    gone = api.get("/v1/movies/m1")  # no catalogue entry and no review left: not a movie we know
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"


@BOTH_STORES
def test_same_idempotency_key_three_times_has_one_effect(api, start_worker, bearer):
    start_worker()
    body = {"user_id": "ben", "movie_id": "m9", "rating": 5.0}
    headers = {**bearer("ben"), "Idempotency-Key": "k-1"}
    answers = [api.post("/v1/reviews", json=body, headers=headers) for _ in range(3)]
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["event_id"] for a in answers}) == 1
    # A different rating under the same key is a conflict, not a silent second effect.
    clash = api.post("/v1/reviews", json={**body, "rating": 1.0}, headers=headers)
    assert clash.status_code == 409
    assert clash.headers["content-type"] == "application/problem+json"
    page = api.get("/v1/users/ben/reviews", params={"after": answers[-1].json()["token"]}).json()
    assert [(r["movie_id"], r["rating"]) for r in page["reviews"]] == [("m9", 5.0)]
    assert api.get("/v1/movies/m9").json()["review_count"] == 1


@BOTH_STORES
def test_history_lists_every_event_and_as_of_shows_the_reviews_as_they_stood(api, start_worker, bearer):
    start_worker()
    first = api.post("/v1/reviews", headers=bearer("cy"), json={"user_id": "cy", "movie_id": "m1", "rating": 2.0}).json()
    api.post("/v1/reviews", headers=bearer("cy"), json={"user_id": "cy", "movie_id": "m2", "rating": 3.5})
    api.post("/v1/reviews", headers=bearer("cy"), json={"user_id": "cy", "movie_id": "m1", "rating": 4.5})
    last = api.delete("/v1/users/cy/reviews/m2", headers=bearer("cy")).json()
    api.get("/v1/users/cy/reviews", params={"after": last["token"]})  # waits until the retraction is visible
    history = api.get("/v1/users/cy/history").json()
    assert [(e["type"], e["payload"]["movie_id"]) for e in history["events"]] == [
        ("ReviewRetracted", "m2"), ("ReviewSubmitted", "m1"), ("ReviewSubmitted", "m2"), ("ReviewSubmitted", "m1")]
    assert history["events"][-1]["event_id"] == first["event_id"]

    # As of the second event's recording: both first reviews, neither the replacement nor the retraction.
    as_of = history["events"][2]["recorded_at"]
    then = api.get("/v1/users/cy/history", params={"as_of": as_of}).json()
    assert [e["type"] for e in then["events"]] == ["ReviewSubmitted", "ReviewSubmitted"]
    assert sorted((r["movie_id"], r["rating"]) for r in then["reviews"]) == [("m1", 2.0), ("m2", 3.5)]
    now = api.get("/v1/users/cy/history", params={"as_of": history["events"][0]["recorded_at"]}).json()
    assert [(r["movie_id"], r["rating"]) for r in now["reviews"]] == [("m1", 4.5)]
    assert api.get("/v1/users/cy/history", params={"limit": 2}).json()["next_cursor"] is not None


BAD_REQUESTS = [
    ("wrong types", {"json": {"user_id": 5, "movie_id": "m", "rating": "high"}}),
    ("rating 7", {"json": {"user_id": "u", "movie_id": "m", "rating": 7}}),
    ("rating not a half step", {"json": {"user_id": "u", "movie_id": "m", "rating": 3.3}}),
    ("missing fields", {"json": {"user_id": "u"}}),
    ("empty id", {"json": {"user_id": "", "movie_id": "m", "rating": 3}}),
    ("unknown field", {"json": {"user_id": "u", "movie_id": "m", "rating": 3, "stars": 3}}),
    ("2 MB body", {"content": b'{"user_id": "' + b"x" * (2 << 20) + b'"}',
                   "headers": {"content-type": "application/json"}}),
    ("invalid JSON", {"content": b'{"user_id": ', "headers": {"content-type": "application/json"}}),
    ("not JSON", {"content": b"user_id=u", "headers": {"content-type": "application/x-www-form-urlencoded"}}),
    ("future review", {"json": {"user_id": "u", "movie_id": "m", "rating": 3, "reviewed_at": "2999-01-01T00:00:00Z"}}),
    ("naive timestamp", {"json": {"user_id": "u", "movie_id": "m", "rating": 3, "reviewed_at": "2020-01-01T00:00:00"}}),
]


@pytest.fixture(scope="module")
def one_api(stack_dir, tmp_path_factory):
    """One API process for the tests that only send it requests it refuses, and a token for "u"."""
    from harmony import bootstrap
    from harmony.settings import load
    from tests.conftest import Service, serving, use_environment

    folder = tmp_path_factory.mktemp("one-api")
    with pytest.MonkeyPatch.context() as monkeypatch:
        env = use_environment(monkeypatch, stack_dir, f"sqlite:///{folder / 'projections.db'}")
        token = bootstrap.token_signer(load()).issue("u")
        service, client = serving(lambda *args: Service(list(args), env, folder / "api.log").start())
        try:
            yield client, {"Authorization": f"Bearer {token}"}
        finally:
            client.close()
            service.stop()


@pytest.mark.parametrize("name,request_args", BAD_REQUESTS, ids=[n for n, _ in BAD_REQUESTS])
def test_bad_requests_get_problem_json_4xx(one_api, name, request_args):
    api, authorization = one_api
    headers = {**authorization, **request_args.pop("headers", {})}
    response = api.post("/v1/reviews", headers=headers, **request_args)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code and problem["title"] and problem["detail"]
