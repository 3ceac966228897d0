"""The API against an in-memory log (unit level) and a real SQLite store."""

from __future__ import annotations

import pytest

from api import reviews as api_reviews
from projections.fold import Record
from projections.projector import apply_records
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import MemoryLog, bearer


def project(log: MemoryLog, store: SQLiteStore) -> None:
    """Stand in for the worker: fold what the log holds into the store."""
    apply_records(store, [Record(p, o, e) for p, events in enumerate(log.partitions) for o, e in enumerate(events)])


def is_problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_submit_then_read_your_write(world):
    client, log, store = world
    receipt = client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m1", "rating": 4.5})
    assert receipt.status_code == 202
    assert set(receipt.json()) == {"event_id", "position", "token"}
    project(log, store)
    page = client.get("/v1/users/ana/reviews", params={"after": receipt.json()["token"]}).json()
    assert [(r["movie_id"], r["rating"]) for r in page["reviews"]] == [("m1", 4.5)]


@pytest.mark.parametrize("read", ["reviews", "history"])
def test_after_token_not_yet_projected_answers_503_after_waiting(world, monkeypatch, read):
    client, _, _ = world
    monkeypatch.setattr(api_reviews, "READ_WAIT", 0.2)
    receipt = client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m1", "rating": 4.5}).json()
    response = client.get(f"/v1/users/ana/{read}", params={"after": receipt["token"]})
    is_problem(response, 503)
    assert response.headers["retry-after"] == "1"
    is_problem(client.get(f"/v1/users/ana/{read}", params={"after": "nonsense"}), 400)


def test_history_waits_for_the_write_behind_after(world):
    client, log, store = world
    receipt = client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m1", "rating": 4.5})
    project(log, store)
    page = client.get("/v1/users/ana/history", params={"after": receipt.json()["token"]}).json()
    assert [e["event_id"] for e in page["events"]] == [receipt.json()["event_id"]]


def test_broker_down_answers_503_and_not_ready(world):
    client, log, _ = world
    log.down = True
    is_problem(client.post("/v1/reviews", headers=bearer("a"), json={"user_id": "a", "movie_id": "m", "rating": 3}), 503)
    is_problem(client.delete("/v1/users/a/reviews/m", headers=bearer("a")), 503)
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_pagination_walks_every_review_once(world):
    client, log, store = world
    for i in range(23):
        client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": f"m{i:02}", "rating": 3,
                                         "reviewed_at": f"2024-01-{1 + i % 5:02}T00:00:00Z"})
    project(log, store)
    seen, cursor = [], None
    while True:
        page = client.get("/v1/users/ana/reviews", params={"limit": 5, **({"cursor": cursor} if cursor else {})})
        seen += [(r["reviewed_at"], r["movie_id"]) for r in page.json()["reviews"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 23 == len(set(seen))
    assert seen == sorted(seen, reverse=True)


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "%%%"},
                                    {"after": "nonsense"}])
def test_bad_query_parameters_are_400(world, params):
    client, _, _ = world
    is_problem(client.get("/v1/users/ana/reviews", params=params), 400)


def test_unknown_movie_and_route_and_method_are_problems(world):
    client, _, _ = world
    is_problem(client.get("/v1/movies/nope"), 404)
    is_problem(client.get("/v2/nothing"), 404)
    is_problem(client.put("/v1/reviews"), 405)


def test_chunked_body_over_the_limit_is_413(world):
    client, _, _ = world

    def chunks():
        for _ in range(200):
            yield b"x" * 1024

    is_problem(client.post("/v1/reviews", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_idempotency_conflict_is_409(world):
    client, _, _ = world
    body = {"user_id": "a", "movie_id": "m", "rating": 3}
    assert client.post("/v1/reviews", json=body, headers={**bearer("a"), "Idempotency-Key": "k"}).status_code == 202
    is_problem(client.post("/v1/reviews", json={**body, "rating": 4}, headers={**bearer("a"), "Idempotency-Key": "k"}), 409)


def test_openapi_documents_every_route_with_schemas(world):
    client, _, _ = world
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/reviews", "/v1/users/{user_id}/reviews", "/v1/users/{user_id}/reviews/{movie_id}",
            "/v1/movies/{movie_id}", "/healthz", "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/reviews"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    submit = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert submit["properties"]["rating"]["maximum"] == 5.0
    assert set(submit["required"]) == {"user_id", "movie_id", "rating"}
