"""The audit trail and as_of time travel, through the API, on the real SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from commands.handlers import ReviewCommands
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import MemoryLog, bearer, memory_auth, memory_forgetting
from tests.unit.test_api import project

T1 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def client(tmp_path):
    clock = {"now": T1}
    log = MemoryLog()
    store = SQLiteStore(tmp_path / "p.db")
    with TestClient(create_app(store, log, ReviewCommands(log, clock=lambda: clock["now"]), memory_auth(log, store),
                               memory_forgetting(log, store, tmp_path / "keys.db"))) as http:
        def at(moment, method, *args, **kwargs):
            clock["now"] = moment
            response = getattr(http, method)(*args, **kwargs)
            project(log, store)
            return response

        yield http, at


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def test_history_keeps_replaced_and_retracted_reviews_newest_first(client):
    http, at = client
    at(T1, "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 2})
    at(T1 + timedelta(hours=1), "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 4})
    at(T1 + timedelta(hours=2), "delete", "/v1/users/ana/reviews/m", headers=bearer("ana"))
    page = http.get("/v1/users/ana/history").json()
    assert [e["type"] for e in page["events"]] == ["ReviewRetracted", "ReviewSubmitted", "ReviewSubmitted"]
    assert [e["payload"].get("rating") for e in page["events"]] == [None, 4.0, 2.0]
    first = page["events"][0]
    assert set(first) == {"event_id", "type", "change", "occurred_at", "recorded_at", "position", "payload"}
    assert "as_of" not in page and "reviews" not in page
    assert [e["change"] for e in page["events"]] == ["retracted", "replaced", "submitted"]


def test_what_an_event_changed_holds_across_pages(client):
    http, at = client
    at(T1, "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 2})
    at(T1 + timedelta(hours=1), "delete", "/v1/users/ana/reviews/m", headers=bearer("ana"))
    at(T1 + timedelta(hours=2), "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 3})
    at(T1 + timedelta(hours=3), "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 4})
    at(T1 + timedelta(hours=4), "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "n", "rating": 4})
    done, cursor = [], None
    while True:
        page = http.get("/v1/users/ana/history", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        done += [e["change"] for e in page["events"]]
        if not (cursor := page["next_cursor"]):
            break
    assert done == ["submitted", "replaced", "submitted", "retracted", "submitted"]


def test_as_of_answers_the_reviews_as_they_stood(client):
    http, at = client
    at(T1, "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 2})
    at(T1, "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "other", "rating": 5})
    at(T1 + timedelta(hours=1), "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 4})
    at(T1 + timedelta(hours=2), "delete", "/v1/users/ana/reviews/m", headers=bearer("ana"))

    def stood(moment):
        page = http.get("/v1/users/ana/history", params={"as_of": iso(moment)}).json()
        return {r["movie_id"]: r["rating"] for r in page["reviews"]}, len(page["events"])

    assert stood(T1 - timedelta(minutes=1)) == ({}, 0)
    assert stood(T1 + timedelta(minutes=30)) == ({"m": 2.0, "other": 5.0}, 2)  # earlier rating after replacement
    assert stood(T1 + timedelta(minutes=90)) == ({"m": 4.0, "other": 5.0}, 3)  # the review again before retraction
    assert stood(T1 + timedelta(hours=3)) == ({"other": 5.0}, 4)
    current = http.get("/v1/users/ana/reviews").json()["reviews"]
    assert [(r["movie_id"], r["rating"]) for r in current] == [("other", 5.0)]


def test_history_pages_with_a_cursor(client):
    http, at = client
    for i in range(7):
        at(T1, "post", "/v1/reviews", headers=bearer("ben"), json={"user_id": "ben", "movie_id": f"m{i}", "rating": 3})
    seen, cursor = [], None
    while True:
        page = http.get("/v1/users/ben/history", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [e["event_id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 7 == len(set(seen))


def test_written_by_answers_the_reviews_by_their_own_dates(client):
    http, at = client
    written = datetime(1997, 9, 22, 3, 0, tzinfo=timezone.utc)  # as an import keeps a review's own date
    at(T1, "post", "/v1/reviews", headers=bearer("ana"),
       json={"user_id": "ana", "movie_id": "m", "rating": 2, "reviewed_at": iso(written)})
    at(T1 + timedelta(hours=1), "post", "/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "n", "rating": 4})
    at(T1 + timedelta(hours=2), "delete", "/v1/users/ana/reviews/m", headers=bearer("ana"))

    def stood(clock, moment):
        page = http.get("/v1/users/ana/history", params={clock: iso(moment)}).json()
        return {r["movie_id"]: r["rating"] for r in page["reviews"]}, [e["change"] for e in page["events"]]

    end_of_1997 = datetime(1997, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert stood("written_by", end_of_1997) == ({"m": 2.0}, ["submitted"])
    assert stood("as_of", end_of_1997) == ({}, [])  # the log recorded it in 2025
    assert stood("written_by", written - timedelta(seconds=1)) == ({}, [])
    assert stood("written_by", T1 + timedelta(minutes=90)) == ({"m": 2.0, "n": 4.0}, ["submitted", "submitted"])
    assert stood("written_by", T1 + timedelta(hours=3)) == ({"n": 4.0}, ["retracted", "submitted", "submitted"])
    page = http.get("/v1/users/ana/history", params={"written_by": iso(end_of_1997)}).json()
    assert "as_of" not in page and page["written_by"] == "1997-12-31T23:59:59.999999Z"
    assert page["reviews"][0]["reviewed_at"] == "1997-09-22T03:00:00Z"
    assert page["events"][0]["occurred_at"] == "1997-09-22T03:00:00Z"


def test_what_an_event_changed_by_written_dates_holds_across_pages(client):
    http, at = client
    at(T1, "post", "/v1/reviews", headers=bearer("ana"),
       json={"user_id": "ana", "movie_id": "m", "rating": 2, "reviewed_at": "1997-01-01T00:00:00Z"})
    at(T1 + timedelta(hours=1), "delete", "/v1/users/ana/reviews/m", headers=bearer("ana"))  # written in 2025
    at(T1 + timedelta(hours=2), "post", "/v1/reviews", headers=bearer("ana"),
       json={"user_id": "ana", "movie_id": "m", "rating": 3, "reviewed_at": "1998-01-01T00:00:00Z"})
    done, cursor = [], None
    while True:
        page = http.get("/v1/users/ana/history", params={"limit": 1, "written_by": "1998-12-31T00:00:00Z",
                                                         **({"cursor": cursor} if cursor else {})}).json()
        done += [(e["payload"]["rating"], e["change"]) for e in page["events"]]
        assert [r["rating"] for r in page["reviews"]] == [3.0]
        if not (cursor := page["next_cursor"]):
            break
    assert done == [(3.0, "replaced"), (2.0, "submitted")]  # the retraction was written after 1998


def test_one_clock_at_a_time(client):
    http, _ = client
    response = http.get("/v1/users/ana/history", params={"as_of": "2025-01-01T00:00:00Z",
                                                         "written_by": "2025-01-01T00:00:00Z"})
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    assert "one of them" in response.json()["detail"]


def test_written_by_is_in_the_openapi_document(client):
    http, _ = client
    operation = http.get("/openapi.json").json()["paths"]["/v1/users/{user_id}/history"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["written_by"]["in"] == "query" and params["written_by"]["schema"]["format"] == "date-time"
    assert "as_of" in params


@pytest.mark.parametrize("params", [{"as_of": "yesterday"}, {"as_of": "2025-01-01T00:00:00"}, {"cursor": "xx"},
                                    {"written_by": "1997"}, {"written_by": "1997-12-31T00:00:00"}])
def test_bad_history_parameters_are_400_problems(client, params):
    http, _ = client
    response = http.get("/v1/users/ana/history", params=params)
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
