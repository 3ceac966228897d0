"""Fuzzing the real API from its served /openapi.json (issue 13), about 2,000 requests from a fixed
seed: `harmony api` and a projection worker on the session's stack. bench/fuzz.py runs the same
with 10,000 (`python -m bench.fuzz`); it holds the checks: no 5xx, every status documented, the
documented content type, body schema and headers, and every 4xx a problem about itself."""

from __future__ import annotations

import time

import pytest
import requests

from bench.common import flat
from bench.fuzz import OPENINGS_PER_HOUR, Tally, load, seed_world, stateful, stateless
from tests.conftest import use_environment

pytestmark = pytest.mark.integration

STATELESS, STATEFUL = 1500, 500  # requests
SEED = 0


@pytest.fixture
def env(stack_dir, store_url, monkeypatch):
    """The session's stack, for an API that lets the fuzzer's visits all open accounts from here."""
    return use_environment(monkeypatch, stack_dir, store_url, HARMONY_ACCOUNTS_PER_HOUR=OPENINGS_PER_HOUR)


def fuzzed(api, capsys, run, *args) -> dict:
    """`run(schema, base_url, session, *args, tally)` against the test's API: its figures, printed."""
    base_url, tally, started = str(api.base_url).rstrip("/"), Tally(), time.monotonic()
    with requests.Session() as session:
        run(load(base_url), base_url, session, *args, tally)
    figures = {**tally.figures(), "seed": SEED, "seconds": round(time.monotonic() - started, 1)}
    with capsys.disabled():
        print("\n" + "\n".join(f"{name}: {value}" for name, value in flat(figures)))
    assert not figures["failures"], "\n\n".join(f"{f['operation']}: {f['failure']} ({f['status']}, ×{f['count']})\n"
                                                f"{f['example']}" for f in figures["failures"])
    return figures


def test_every_operation_answers_generated_requests_as_documented(api, start_worker, settings, live_store, bearer,
                                                                  capsys):
    start_worker()
    seed_world(settings.kafka_bootstrap, settings.topic, live_store)
    answers = fuzzed(api, capsys, stateless, STATELESS, lambda user: bearer(user)["Authorization"], SEED)["answers"]
    spec = api.get("/openapi.json").json()
    assert set(answers) == {f"{method.upper()} {path}" for path, methods in spec["paths"].items() for method in methods}
    assert sum(count for statuses in answers.values() for count in statuses.values()) >= STATELESS * 0.9
    for operation in ("POST /v1/reviews", "DELETE /v1/users/{user_id}/reviews/{movie_id}"):
        assert {"202", "401", "403", "422"} <= set(answers[operation]), (operation, answers[operation])
    for operation in ("GET /v1/match", "GET /v1/movies", "GET /v1/catalogue", "GET /v1/users/{user_id}/history"):
        assert {"200", "400"} <= set(answers[operation]), (operation, answers[operation])


def test_visits_write_with_their_own_token_and_read_back_what_they_wrote(api, start_worker, capsys):
    start_worker()
    figures = fuzzed(api, capsys, stateful, STATEFUL, SEED)
    answers = figures["answers"]
    assert figures["cases"] >= STATEFUL
    assert answers["POST /v1/accounts"].get("201") and answers["POST /v1/tokens"].get("200")
    assert answers["POST /v1/reviews"].get("202")
    assert answers["DELETE /v1/users/{user_id}/reviews/{movie_id}"].get("202")
