"""Accounts and durable idempotency against the real broker and store, across API processes and restarts."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from datetime import datetime, timezone

from events.codec import decode_account
from events.reader import read_log
from events.types import ReviewSubmitted
from harmony import bootstrap
from tests.conftest import serving, wait_until
from tests.integration.helpers import produce_events

pytestmark = pytest.mark.integration

PASSWORD = "a long enough password"


def token_headers(client: httpx.Client, user_id: str, password: str = PASSWORD) -> dict[str, str]:
    answer = client.post("/v1/tokens", json={"user_id": user_id, "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_an_account_opened_on_one_api_process_signs_in_on_another(services, start_worker):
    start_worker()
    _, first = serving(services)
    _, second = serving(services)
    assert first.post("/v1/accounts", json={"user_id": "ana", "password": PASSWORD}).status_code == 201
    # Both read the store's accounts view, which the worker keeps: the other knows the account too.
    headers = token_headers(second, "ana")
    assert second.post("/v1/accounts", json={"user_id": "ana", "password": "someone else's"}).status_code == 409
    written = second.post("/v1/reviews", json={"user_id": "ana", "movie_id": "m1", "rating": 4}, headers=headers)
    assert written.status_code == 202
    refused = second.post("/v1/reviews", json={"user_id": "ben", "movie_id": "m1", "rating": 4}, headers=headers)
    assert refused.status_code == 403


def test_harmony_accounts_add_opens_an_account_the_api_signs_in(env, api, settings, start_worker):
    start_worker()
    opened = subprocess.run([sys.executable, "-m", "harmony", "accounts", "add", "cli-user", "--password-stdin"],
                            input=PASSWORD + "\n", env=env, capture_output=True, text=True, timeout=60)
    assert opened.returncode == 0, opened.stderr
    assert PASSWORD not in opened.stdout + opened.stderr
    token_headers(api, "cli-user")
    again = subprocess.run([sys.executable, "-m", "harmony", "accounts", "add", "cli-user", "--password-stdin"],
                           input=PASSWORD + "\n", env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "already has an account" in again.stderr
    short = subprocess.run([sys.executable, "-m", "harmony", "accounts", "add", "x", "--password-stdin"],
                           input="short\n", env=env, capture_output=True, text=True, timeout=60)
    assert short.returncode == 1 and "password" in short.stderr and "short" not in short.stderr.split("password")[0]
    # The password is in no record of the accounts topic; its argon2id hash is, sealed under the user's key.
    async def records():
        return [r async for batch in read_log(settings.kafka_bootstrap, f"{settings.topic}.accounts") for r in batch]

    [record] = asyncio.run(records())
    for clear in (PASSWORD.encode(), b"$argon2id$", b"cli-user"):
        assert clear not in record.key + record.value
    keys = bootstrap.keyring(settings)
    keys.load([record.key.decode()])
    opening, subject = decode_account(record.value, keys)
    assert opening.user_id == "cli-user" and opening.password_hash.startswith("$argon2id$")
    assert subject == record.key.decode() == keys.subject_of("cli-user")


def test_before_the_worker_has_read_an_account_sign_in_is_a_503_not_a_failed_try(services, start_worker):
    """Issue 22: an API process that had not read the accounts yet (a restart) answered 401 and
    counted it toward the throttle, so the user was locked out."""
    _, api = serving(services)
    # No worker yet: the opening reaches the log, but no view has it.
    assert api.post("/v1/accounts", json={"user_id": "eve", "password": PASSWORD}).status_code == 503
    for _ in range(2):  # each waits 5 s for the view (tests/unit/test_auth.py tries more than the throttle allows)
        behind = api.post("/v1/tokens", json={"user_id": "eve", "password": PASSWORD})
        assert behind.status_code == 503 and behind.headers["retry-after"] == "1", behind.text
    start_worker()
    wait_until(lambda: api.post("/v1/tokens", json={"user_id": "eve", "password": PASSWORD}).status_code == 200, 30,
               "the worker never projected the account")
    _, restarted = serving(services)  # a new process reads the view at once
    token_headers(restarted, "eve")


def test_a_retry_after_an_api_restart_answers_the_first_receipt_once_projected(services, start_worker, settings,
                                                                              bearer):
    start_worker()
    api_process, api = serving(services)
    headers = {**bearer("dora"), "Idempotency-Key": "restart-1"}
    body = {"user_id": "dora", "movie_id": "m1", "rating": 3.5}
    first = api.post("/v1/reviews", json=body, headers=headers).json()
    api.get("/v1/users/dora/reviews", params={"after": first["token"]})  # projected
    api_process.stop()
    _, api = serving(services)
    again = api.post("/v1/reviews", json=body, headers=headers)
    assert again.status_code == 202 and again.json() == first
    clash = api.post("/v1/reviews", json={**body, "rating": 1.0}, headers=headers)
    assert clash.status_code == 409 and clash.headers["content-type"] == "application/problem+json"

    async def count():
        return sum([len(batch) async for batch in read_log(settings.kafka_bootstrap, settings.topic)])

    assert asyncio.run(count()) == 1  # no duplicate reached the log


def test_an_imported_users_id_is_claimed_by_an_operator_only_and_look_alikes_of_it_are_refused(
        env, api, settings, start_worker):
    """Issue 24, item 7: anyone could open an account for an imported MovieLens user and write as them."""
    start_worker()
    at = datetime(2024, 5, 1, tzinfo=timezone.utc)
    produce_events(settings.kafka_bootstrap, settings.topic, [ReviewSubmitted(
        event_id="imported-1", occurred_at=at, recorded_at=at, user_id="7", movie_id="m", rating=4.0, reviewed_at=at)])
    wait_until(lambda: api.get("/v1/users/7/history").json()["events"], 30, "the worker never projected the review")
    claimed = api.post("/v1/accounts", json={"user_id": "7", "password": PASSWORD})
    assert claimed.status_code == 409 and "only an operator" in claimed.json()["detail"], claimed.text
    opened = subprocess.run([sys.executable, "-m", "harmony", "accounts", "add", "7", "--password-stdin"],
                            input=PASSWORD + "\n", env=env, capture_output=True, text=True, timeout=60)
    assert opened.returncode == 0, opened.stderr
    token_headers(api, "7")
    alike = api.post("/v1/accounts", json={"user_id": "\uff17", "password": PASSWORD})  # a fullwidth 7
    assert alike.status_code == 422 and alike.json()["errors"][0]["pointer"] == "#/user_id", alike.text


def test_failed_sign_ins_count_in_every_api_process(services):
    """Issue 24: each process kept its own counts, so N processes gave N times the guesses. The counts
    live in the store; a user id with no account fails like a wrong password (no worker needed)."""
    _, first = serving(services)
    _, second = serving(services)
    guess = {"user_id": "zed", "password": "not the password"}
    failed = 0
    while (answer := (first, second)[failed % 2].post("/v1/tokens", json=guess)).status_code == 401:
        failed += 1
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1, answer.text
    # 5 free, then the waits (1 s, 2 s, ... from the first try) soon stop the guesses; counted per
    # process, the two would have let 10 through first.
    assert 5 <= failed < 10
