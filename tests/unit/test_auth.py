"""Accounts, tokens and who may write what: the API over an in-memory log and a real SQLite store."""

from __future__ import annotations

import asyncio
import base64
import logging

import msgspec
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.tokens import InvalidToken, TokenSigner
from commands.accounts import AccountTaken
from commands.handlers import ReviewCommands
from events.codec import encode
from events.reader import LogRecord
from projections.accounts import fold_accounts
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import ACCOUNTS, TOKEN_KEY, MemoryLog, bearer, memory_auth
from tests.unit.test_api import is_problem

PASSWORD = "correct horse battery staple"


def open_account(client, user_id="ana", password=PASSWORD):
    return client.post("/v1/accounts", json={"user_id": user_id, "password": password})


def sign_in(client, user_id="ana", password=PASSWORD):
    return client.post("/v1/tokens", json={"user_id": user_id, "password": password})


def review(user_id="ana", movie_id="m", rating=4):
    return {"user_id": user_id, "movie_id": movie_id, "rating": rating}


def test_an_account_gives_a_token_that_writes_the_users_reviews(world):
    client, log, _ = world
    assert open_account(client).status_code == 201
    answer = sign_in(client)
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 3600
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert client.post("/v1/reviews", json=review(), headers=headers).status_code == 202
    assert client.delete("/v1/users/ana/reviews/m", headers=headers).status_code == 202
    assert len(log.events) == 2


def test_a_taken_user_id_is_a_409_and_keeps_its_password(world):
    client, _, _ = world
    assert open_account(client).status_code == 201
    is_problem(open_account(client, password="another password"), 409)
    assert sign_in(client).status_code == 200
    is_problem(sign_in(client, password="another password"), 401)


def test_of_two_openings_of_one_id_at_once_exactly_one_wins(world):
    client, log, _ = world
    accounts = client.app.state.auth.accounts

    async def race():
        from commands.accounts import OpenAccount
        return await asyncio.gather(*(accounts.open(OpenAccount("ana", f"password {n}")) for n in range(2)),
                                    return_exceptions=True)

    outcomes = client.portal.call(race)
    assert len(log.topics[ACCOUNTS]) == 2  # both were appended: the log's order decided
    [taken] = [o for o in outcomes if isinstance(o, AccountTaken)]
    [winner] = [o for o in outcomes if o is not taken]
    assert winner.event_id == log.topics[ACCOUNTS][0].event_id


def test_writing_needs_a_valid_token_for_that_user(world):
    client, log, _ = world
    body = is_problem(client.post("/v1/reviews", json=review()), 401)
    assert "Bearer" in body["detail"]
    for headers in ({"Authorization": "Basic YW5hOnB3"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer not.a.token"},
                    {"Authorization": "Bearer " + TokenSigner(b"k" * 32, 60).issue("ana")}):
        response = client.post("/v1/reviews", json=review(), headers=headers)
        is_problem(response, 401)
        assert response.headers["www-authenticate"].startswith('Bearer realm="moviEharmony"')
    is_problem(client.post("/v1/reviews", json=review("ben"), headers=bearer("ana")), 403)
    is_problem(client.delete("/v1/users/ben/reviews/m", headers=bearer("ana")), 403)
    is_problem(client.delete("/v1/users/ben/reviews/m"), 401)
    assert log.events == []


def test_a_token_for_a_cannot_retract_bs_review(world):
    client, log, _ = world
    assert client.post("/v1/reviews", json=review("ben"), headers=bearer("ben")).status_code == 202
    is_problem(client.delete("/v1/users/ben/reviews/m", headers=bearer("ana")), 403)
    assert [type(e).__name__ for e in log.events] == ["ReviewSubmitted"]


def test_an_expired_token_is_refused():
    clock = {"now": 1_000_000.0}
    signer = TokenSigner(TOKEN_KEY, 60, clock=lambda: clock["now"])
    token = signer.issue("ana")
    assert signer.subject(token) == "ana"
    clock["now"] += 60
    with pytest.raises(InvalidToken, match="expired"):
        signer.subject(token)


def test_a_tampered_token_is_refused():
    signer = TokenSigner(TOKEN_KEY, 60)
    header, claims, signature = signer.issue("ana").split(".")
    forged = msgspec.json.encode({"sub": "ben", "iat": 0, "exp": 2**40})
    forged_claims = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    for token in (f"{header}.{forged_claims}.{signature}", f"{header}.{claims}.{signature[:-2]}", "é.é.é", "a.b"):
        with pytest.raises(InvalidToken):
            signer.subject(token)


def test_failed_sign_ins_are_slowed_down_per_user_id(world):
    client, _, _ = world
    assert open_account(client).status_code == 201
    for _ in range(5):
        is_problem(sign_in(client, password="wrong password"), 401)
    throttled = sign_in(client)  # even the right password waits now
    is_problem(throttled, 429)
    assert int(throttled.headers["retry-after"]) >= 1
    assert open_account(client, "ben").status_code == 201
    assert sign_in(client, "ben").status_code == 200  # another user id is not slowed down


def test_while_the_accounts_are_not_all_read_sign_in_is_a_503_not_counted_as_a_failed_try(world):
    """Issue 22: a process that had not read the accounts log yet answered 401 "wrong password" and
    counted it, so users were locked out after a restart."""
    client, log, store = world
    log.followers[ACCOUNTS].clear()  # the projector is behind: ana's opening is in the log only
    is_problem(open_account(client), 503)
    for _ in range(8):
        behind = sign_in(client)
        is_problem(behind, 503)
        assert behind.headers["retry-after"] == "1"
    opened = log.topics[ACCOUNTS]
    store.put_accounts(*fold_accounts([LogRecord(0, n, e.key.encode(), encode(e)) for n, e in enumerate(opened)]))
    assert sign_in(client).status_code == 200  # not throttled: no failed try was counted
    is_problem(sign_in(client, "ben"), 401)  # caught up, and ben has no account


def test_the_throttle_doubles_the_wait_and_forgets_after_its_window():
    from api.auth import Throttle

    clock = {"now": 0.0}
    throttle = Throttle(free=2, window=100.0, clock=lambda: clock["now"])
    for _ in range(2):
        throttle.failed("k")
    assert throttle.wait("k") == 1.0
    throttle.failed("k")
    assert throttle.wait("k") == 2.0
    clock["now"] += 2.0
    assert throttle.wait("k") == 0.0
    clock["now"] += 200.0
    throttle.failed("k")
    assert throttle.wait("k") == 0.0  # the old failures are past the window


def test_an_imported_user_without_an_account_cannot_get_a_token(world):
    client, _, _ = world
    is_problem(sign_in(client, "imported-user"), 401)
    is_problem(client.post("/v1/tokens", json={"user_id": "ana"}), 422)


def test_a_password_is_never_in_the_log_a_response_or_a_log_line(world, caplog):
    client, log, _ = world
    caplog.set_level(logging.DEBUG)
    responses = [open_account(client), open_account(client), sign_in(client), sign_in(client, password="x" * 7),
                 open_account(client, "short", "x" * 7), open_account(client, "ben", "y" * 2000),
                 client.post("/v1/accounts", content=f'{{"user_id": "c", "password": "{PASSWORD}"',
                             headers={"content-type": "application/json"})]
    assert [r.status_code for r in responses] == [201, 409, 200, 401, 422, 422, 400]
    assert all(PASSWORD not in r.text for r in responses)
    [opened] = log.topics[ACCOUNTS]
    assert PASSWORD.encode() not in encode(opened) and opened.password_hash.startswith("$argon2id$")
    assert PASSWORD not in caplog.text


def test_history_can_require_the_users_token(tmp_path):
    log = MemoryLog()
    store = SQLiteStore(tmp_path / "p.db")
    app = create_app(store, log, ReviewCommands(log), memory_auth(log, store, private_history=True))
    with TestClient(app) as client:
        is_problem(client.get("/v1/users/ana/history"), 401)
        is_problem(client.get("/v1/users/ana/history", headers=bearer("ben")), 403)
        assert client.get("/v1/users/ana/history", headers=bearer("ana")).status_code == 200
        assert client.get("/v1/users/ana/reviews").status_code == 200  # reviews stay public
        spec = client.get("/openapi.json").json()
        assert spec["paths"]["/v1/users/{user_id}/history"]["get"]["security"] == [{"bearer": []}]
    store.close()


def test_the_openapi_document_describes_the_security_scheme(world):
    client, _, _ = world
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    submit = spec["paths"]["/v1/reviews"]["post"]
    assert submit["security"] == [{"bearer": []}] and {"401", "403"} <= set(submit["responses"])
    assert "WWW-Authenticate" in submit["responses"]["401"]["headers"]
    assert "security" not in spec["paths"]["/v1/users/{user_id}/history"]["get"]
    assert spec["paths"]["/v1/tokens"]["post"]["responses"]["429"]["headers"]["Retry-After"]
