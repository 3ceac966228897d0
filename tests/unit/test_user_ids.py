"""Issue 24, items 6 and 7: new user ids that look like another are refused, and an imported
user's id is claimed only by an operator. The API over an in-memory log and a real SQLite store."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone

import pytest
from argon2 import PasswordHasher

from commands.accounts import AccountTaken, OpenAccount
from events.codec import encode
from events.reader import LogRecord
from events.types import AccountOpened, ReviewSubmitted
from projections.accounts import fold_accounts, skeleton
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import ACCOUNTS
from tests.unit.test_api import is_problem, project
from tests.unit.test_site import readable, sign_up, site  # noqa: F401 - `site` is a fixture

PASSWORD = "correct horse battery staple"
NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)


def open_account(client, user_id):
    return client.post("/v1/accounts", json={"user_id": user_id, "password": PASSWORD})


@pytest.mark.parametrize("user_id, reason", [
    ("\u202eana", "invisible character (U+202E RIGHT-TO-LEFT OVERRIDE)"),
    ("a\u200bna", "invisible character (U+200B ZERO WIDTH SPACE)"),
    ("ana ", "space"),
    (" ana", "space"),
    ("a\u00a0na", "compatibility character (U+00A0 NO-BREAK SPACE)"),
    ("\uff41\uff4e\uff41", "one spelling"),  # fullwidth "ana"
    ("Jose\u0301", "one spelling"),  # NFD
    ("p\u0430ypal", "one script, not Cyrillic and Latin"),  # one Cyrillic a
    ("\u05d0\u05d1c", "right-to-left and left-to-right"),
    ("...", "only dots"),
    (".", "matching regex"),  # refused by every command's id pattern first
])
def test_an_id_that_looks_like_another_is_a_422_naming_the_field_and_opens_nothing(world, user_id, reason):
    client, log, _ = world
    problem = is_problem(open_account(client, user_id), 422)
    [error] = problem["errors"]
    assert error["pointer"] == "#/user_id" and reason in error["detail"]
    assert ACCOUNTS not in log.topics


def test_accented_and_other_scripts_stay_welcome(world):
    client, _, _ = world
    for user_id in ("José", "Ελένη", "山田たろう", "A1RSDE90N6RSZF", "ana.b-c_d"):
        assert open_account(client, user_id).status_code == 201, user_id


def test_an_id_that_looks_like_an_accounts_id_is_a_409(world):
    client, log, _ = world
    for user_id in ("paypal", "ace"):
        assert open_account(client, user_id).status_code == 201
    for alike in ("PayPal", "paypaI", "\u0430\u0441\u0435"):  # case, capital I for l, all-Cyrillic "асе"
        assert "looks like" in is_problem(open_account(client, alike), 409)["detail"]
    assert [e.user_id for e in log.topics[ACCOUNTS]] == ["paypal", "ace"]
    assert skeleton("José") != skeleton("Jose")  # accents are no look-alikes


def test_an_imported_users_id_is_opened_by_an_operator_only(world):
    client, log, store = world
    client.portal.call(log.append, ReviewSubmitted(event_id="e1", occurred_at=NOW, recorded_at=NOW, user_id="1",
                                                   movie_id="m", rating=4.0, reviewed_at=NOW))  # imported: no account
    project(log, store)
    assert "only an operator" in is_problem(open_account(client, "1"), 409)["detail"]
    accounts = client.app.state.auth.accounts
    client.portal.call(lambda: accounts.open(OpenAccount("1", PASSWORD), by_operator=True))
    assert client.post("/v1/tokens", json={"user_id": "1", "password": PASSWORD}).status_code == 200
    with pytest.raises(AccountTaken):  # once, as for any id
        client.portal.call(lambda: accounts.open(OpenAccount("1", PASSWORD), by_operator=True))


def test_ids_already_in_the_log_are_left_as_they_are(world):
    client, _, store = world
    opened = AccountOpened(event_id="a1", occurred_at=NOW, recorded_at=NOW, user_id="ana ",  # opened before the rule
                           password_hash=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD))
    store.put_accounts(*fold_accounts([LogRecord(0, 0, opened.key.encode(), encode(opened))], None))
    assert client.post("/v1/tokens", json={"user_id": "ana ", "password": PASSWORD}).status_code == 200


def test_a_sqlite_accounts_view_from_before_skeletons_is_read_again_from_the_topic(tmp_path):
    SQLiteStore(tmp_path / "p.db").close()
    with sqlite3.connect(tmp_path / "p.db") as db:  # the accounts view as it was
        db.execute("DROP TABLE accounts")
        db.execute('CREATE TABLE accounts (user_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, password_hash TEXT NOT '
                   'NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL) WITHOUT ROWID')
        db.execute("INSERT INTO accounts VALUES ('ana', 'e1', 'hash', 0, 0)")
        db.execute("INSERT INTO accounts_checkpoints VALUES (0, 0)")
    db.close()
    store = SQLiteStore(tmp_path / "p.db")
    assert store.accounts_checkpoint() == {} and store.account("ana") is None
    store.close()


def test_sign_up_shows_the_apis_refusal_of_an_id_beside_the_field(site):  # noqa: F811 - the fixture
    client, _, _ = site
    response = sign_up(client, "p\u0430ypal")
    readable(response, 422, "one script")
    assert re.search(r'<span class="error" id="user_id-error">[^<]*one script', response.text)
    assert sign_up(client, "paypal").status_code == 303
    client.cookies.clear()
    response = sign_up(client, "paypaI")
    readable(response, 409, "looks like")
    assert re.search(r'<span class="error" id="user_id-error">[^<]*looks like', response.text)
