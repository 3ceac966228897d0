"""Inputs that used to get a 500, or be accepted and then be unreadable, or be silently ignored
(issue 13's list): each is now a 4xx problem, and nothing is appended."""

from __future__ import annotations

import base64
import json

import pytest

from tests.unit.fakes import bearer
from tests.unit.test_api import is_problem

OFF_THE_CALENDAR = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


def cursor_of(*key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


@pytest.mark.parametrize("moment", OFF_THE_CALENDAR)
def test_a_time_whose_utc_falls_off_the_calendar_is_a_400(world, moment):
    client = world[0]
    is_problem(client.get("/v1/users/ana/history", params={"as_of": moment}), 400)
    is_problem(client.get("/v1/users/ana/reviews", params={"cursor": cursor_of(moment, "m")}), 400)


@pytest.mark.parametrize("key", [(2**70, 0), (0, 2**63), (-1, 5), (0, 1.5)])
def test_a_history_cursor_a_store_cannot_hold_is_a_400(world, key):
    is_problem(world[0].get("/v1/users/ana/history", params={"cursor": cursor_of(*key)}), 400)


@pytest.mark.parametrize("path, name", [("/v1/users/ana/history", "as_of"), ("/v1/users/ana/history", "cursor"),
                                        ("/v1/users/ana/reviews", "cursor"), ("/v1/users/ana/reviews", "after"),
                                        ("/v1/movies?q=star", "cursor")])
def test_an_empty_parameter_is_a_400_not_ignored(world, path, name):
    is_problem(world[0].get(path, params={name: ""}), 400)


@pytest.mark.parametrize("weights", ["1_0,1", " 1,2", "inf,1", "nan,1", "1e3,1", "", "0x1,1"])
def test_weights_are_plain_decimals(world, weights):
    is_problem(world[0].get("/v1/match", params={"users": "a,b", "strategy": "average", "weights": weights}), 400)


def test_an_idempotency_key_is_1_to_255_visible_ascii_characters(world):
    client, log, _ = world
    body = {"user_id": "ana", "movie_id": "m", "rating": 4}
    for key in ("k" * 256, "", "two words\t"):
        is_problem(client.post("/v1/reviews", json=body, headers={**bearer("ana"), "Idempotency-Key": key}), 400)
        is_problem(client.delete("/v1/users/ana/reviews/m", headers={**bearer("ana"), "Idempotency-Key": key}), 400)
    assert log.events == []
    assert client.post("/v1/reviews", json=body, headers={**bearer("ana"), "Idempotency-Key": "k" * 255}).status_code == 202


@pytest.mark.parametrize("field, value", [("user_id", "a/b"), ("user_id", "   "), ("user_id", "ana\n"),
                                          ("movie_id", "m\x07"), ("movie_id", "\u0085"), ("movie_id", "/"),
                                          ("movie_id", "."), ("movie_id", "..")])
def test_an_id_that_could_not_be_read_back_or_shown_is_a_422(world, field, value):
    client, log, _ = world
    body = is_problem(client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 4,
                                                      field: value}), 422)
    assert [e["pointer"] for e in body["errors"]] == [f"#/{field}"]
    assert log.events == []


def test_ids_with_spaces_and_accents_inside_are_fine(world):
    client = world[0]
    assert client.post("/v1/reviews", headers=bearer("Zoë K"), json={"user_id": "Zoë K", "movie_id": " m 1 ", "rating": 4}).status_code == 202


def test_the_openapi_document_bounds_the_key_and_describes_the_ids(world):
    spec = world[0].get("/openapi.json").json()
    key = next(p for p in spec["paths"]["/v1/reviews"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert key["schema"]["maxLength"] == 255
    submit = spec["components"]["schemas"]["SubmitReview"]["properties"]
    assert submit["user_id"]["pattern"] and submit["movie_id"]["maxLength"] == 128


def test_the_openapi_document_names_operations_bounds_pages_and_says_when_to_retry(world):
    client, log, _ = world
    spec = client.get("/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) == len(operations)
    for op in operations:
        for param in op.get("parameters", []):
            if param["name"] == "limit":
                assert param["schema"]["minimum"] == 1 and param["schema"]["maximum"] >= 10
        if "503" in op["responses"]:
            assert "Retry-After" in op["responses"]["503"]["headers"]
    log.down = True  # every 503 the document promises a Retry-After for carries one
    assert client.get("/readyz").headers["retry-after"] == "1"
    assert client.post("/v1/reviews", headers=bearer("a"), json={"user_id": "a", "movie_id": "m", "rating": 3}).headers["retry-after"]


@pytest.mark.parametrize("body", [
    b'{"user_id":"ana","movie_id":"m","rating":1,"rating":5}',
    b'{"user_id":"ana","movie_id":"m","rating":1,"\\u0072ating":5}',  # the same key, spelt with an escape
    b'{"user_id":"ana","movie_id":"m","rating":1,"text":"a","text":"b"}',
])
def test_a_key_repeated_in_a_body_is_a_400_not_the_last_one_wins(world, body):
    client, log, _ = world
    answer = client.post("/v1/reviews", content=body, headers={**bearer("ana"), "Content-Type": "application/json"})
    assert "duplicate key" in is_problem(answer, 400)["detail"]
    assert log.events == []


def test_a_key_named_inside_a_value_is_no_repeat(world):
    client, log, _ = world
    body = {"user_id": "ana", "movie_id": "m", "rating": 4, "summary": 'a "rating" of "rating"', "text": "\\"}
    assert client.post("/v1/reviews", json=body, headers=bearer("ana")).status_code == 202
    assert log.events[0].summary == body["summary"] and log.events[0].text == "\\"


@pytest.mark.parametrize("path", ["/v1/accounts", "/v1/tokens", "/v1/reviews"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_needs_its_content_type(world, path, content_type):
    # What another site can make a browser send without a preflight (no-cors fetch, sendBeacon, a form).
    client, log, _ = world
    body = json.dumps({"user_id": "ana", "password": "a long passphrase", "movie_id": "m", "rating": 4})
    headers = {**bearer("ana"), **({"Content-Type": content_type} if content_type else {})}
    assert "application/json" in is_problem(client.post(path, content=body, headers=headers), 415)["detail"]
    assert log.events == [] and log.topics == {}
    headers["Content-Type"] = "Application/JSON; charset=utf-8"  # media types are case-insensitive
    assert client.post(path, content=body, headers=headers).status_code != 415


def test_an_after_token_past_the_logs_end_is_a_400_without_the_wait(world, monkeypatch):
    from api import reviews
    from events.position import Position

    client, log, _ = world
    monkeypatch.setattr(reviews, "READ_WAIT", 1.0)  # else a 503 (it used to be one, 5 s later)
    review = {"user_id": "ana", "movie_id": "m", "rating": 4}
    receipt = client.post("/v1/reviews", headers=bearer("ana"), json=review).json()
    written = Position.from_token(receipt["token"])
    for made_up in (Position(written.partition, 10**12), Position(99, 0)):
        is_problem(client.get("/v1/users/ana/reviews", params={"after": made_up.token()}), 400)
    # A write made after the log's end was last read (by another process, say) is still waited for.
    later = client.post("/v1/reviews", headers=bearer("ana"), json={**review, "movie_id": "n"}).json()
    is_problem(client.get("/v1/users/ana/reviews", params={"after": later["token"]}), 503)


@pytest.mark.parametrize("user", ["%01", "a%7Fb", "%C2%85", "%20%20", "%2E%2E", "x" * 129])
def test_a_user_id_nobody_could_write_for_is_a_400_on_reads_and_forgetting(world, user):
    client = world[0]
    for path in (f"/v1/users/{user}/reviews", f"/v1/users/{user}/history"):
        assert "1 to 128 characters" in is_problem(client.get(path), 400)["detail"]
    is_problem(client.delete(f"/v1/users/{user}", headers=bearer("ana")), 400)


def test_a_user_id_anybody_could_write_for_is_read_even_with_nothing_written(world):
    client = world[0]
    for user in ("Zoë K", "x" * 128, "..."):
        assert client.get(f"/v1/users/{user}/reviews").json()["reviews"] == []
        assert client.get(f"/v1/users/{user}/history").json()["events"] == []
