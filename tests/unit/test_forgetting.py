"""DELETE /v1/users/{id}: the user is forgotten at once for every read, their key and factor rows go.
(The projectors' side is tests/store_contract.py; the whole path on real servers, test_forget_me.)"""

from __future__ import annotations

from events.types import SubjectForgotten
from tests.unit.fakes import bearer
from tests.unit.test_api import is_problem
from tests.unit.test_match import project, publish


def wrote_a_review(client, log, store, user: str) -> None:
    client.app.state.forgetting.keys.subjects([user])  # as sealing the review's event makes the user's key
    assert client.post("/v1/reviews", headers=bearer(user), json={"user_id": user, "movie_id": "m3",
                                                                  "rating": 4.0}).status_code == 202
    project(log, store)


def test_only_the_user_may_forget_themselves(world):
    client, log, store = world
    wrote_a_review(client, log, store, "ana")
    is_problem(client.delete("/v1/users/ana"), 401)
    is_problem(client.delete("/v1/users/ana", headers=bearer("ben")), 403)
    assert client.get("/v1/users/ana/reviews").json()["reviews"]


def test_a_forgotten_user_is_404_everywhere_at_once_and_their_key_and_factors_are_gone(world):
    client, log, store = world
    info = publish(store)
    for user in ("ana", "ben"):
        wrote_a_review(client, log, store, user)
    keys = client.app.state.forgetting.keys
    subject = keys.subject_of("ana")
    assert [r["user_id"] for r in client.get("/v1/movies/m3/reviews").json()["reviews"]] == ["ben", "ana"]

    receipt = client.delete("/v1/users/ana", headers=bearer("ana"))
    assert receipt.status_code == 202 and receipt.json()["event_id"]
    [forgetting] = [e for e in log.events if isinstance(e, SubjectForgotten)]
    assert forgetting.subject == subject and forgetting.event_id == receipt.json()["event_id"]
    assert keys.subject_of("ana") is None and keys.records.by_subject([subject]) == {}

    for path in ("/v1/users/ana/reviews", "/v1/users/ana/history", "/v1/match?users=ana,ben"):
        assert "asked to be forgotten" in is_problem(client.get(path), 404)["detail"]
    assert "asked to be forgotten" in is_problem(client.delete("/v1/users/ana", headers=bearer("ana")), 404)["detail"]
    assert {row.id for row in store.factors(info.version, "user")} == {"ben"}
    # The projector has not applied the forgetting yet: the store still holds ana's rows, no read shows them.
    assert store.user_reviews("ana", 10, None)
    assert [r["user_id"] for r in client.get("/v1/movies/m3/reviews").json()["reviews"]] == ["ben"]
    assert client.get("/v1/users", params={"prefix": "a"}).json()["users"] == []
    assert client.get("/v1/users", params={"prefix": "b"}).json()["users"] == ["ben"]
    assert client.get("/v1/users/ben/reviews").json()["reviews"] and client.get("/v1/users/ben/history").status_code == 200


def test_a_forgetting_cut_short_by_the_log_is_finished_by_a_retry(world):
    client, log, store = world
    wrote_a_review(client, log, store, "ana")
    log.down = True
    assert client.delete("/v1/users/ana", headers=bearer("ana")).status_code == 503
    assert is_problem(client.get("/v1/users/ana/reviews"), 404)  # retired already
    log.down = False
    assert client.delete("/v1/users/ana", headers=bearer("ana")).status_code == 202
    assert client.app.state.forgetting.keys.subject_of("ana") is None


def test_a_user_with_nothing_written_has_nothing_to_forget(world):
    client, _, _ = world
    assert "nothing to forget" in is_problem(client.delete("/v1/users/cy", headers=bearer("cy")), 404)["detail"]
