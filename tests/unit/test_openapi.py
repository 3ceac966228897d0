"""The OpenAPI document says what the API does (issue 13): answers checked against it with
Schemathesis's own checks, and the constraints that let a client (or a fuzzer) build only requests
that can be sent and are valid. tests/integration/test_fuzz.py fuzzes the real API from it."""

from __future__ import annotations

import re

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance,
)

from commands.accounts import OpenAccount
from commands.types import SubmitReview
from tests.unit.fakes import bearer
from tests.unit.test_api import project

CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture
def spec(world) -> dict:
    return world[0].get("/openapi.json").json()


def conforms(spec: dict, method: str, path: str, response, **request) -> None:
    """Schemathesis's conformance checks of `response`, answered to `request` of the operation."""
    schemathesis.openapi.from_dict(spec)[path][method].Case(**request).validate_response(response, checks=CHECKS)


def parameters(spec: dict, name: str) -> list[dict]:
    return [p for operations in spec["paths"].values() for op in operations.values()
            for p in op.get("parameters", []) if p["name"] == name]


def matches(schema: dict, value: str) -> bool:
    return re.search(schema["pattern"], value) is not None


@pytest.mark.parametrize("path, command", [("/v1/accounts", OpenAccount), ("/v1/reviews", SubmitReview)])
def test_a_generator_makes_valid_bodies_from_the_document(spec, path, command):
    # The ids' pattern must be one generators can satisfy: with lookaheads only (no characters to
    # match), Schemathesis found no string at all, and sent no valid body.
    @given(case=schemathesis.openapi.from_dict(spec)[path]["POST"].as_strategy())
    @settings(max_examples=25, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    def valid(case):
        msgspec.convert(case.body, command)

    valid()


def test_readyz_not_ready_answers_the_health_body_it_documents(world, spec):
    client, log, _ = world
    log.down = True
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["broker"] != "ok"
    conforms(spec, "GET", "/readyz", response)


def test_every_time_the_api_sends_is_documented_as_an_rfc_3339_date_time(world, spec):
    client, log, store = world
    assert client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "m", "rating": 4}
                       ).status_code == 202
    project(log, store)
    history = client.get("/v1/users/ana/history", params={"as_of": "2999-01-01T00:00:00Z"})
    conforms(spec, "GET", "/v1/users/{user_id}/history", history, path_parameters={"user_id": "ana"})
    schemas = spec["components"]["schemas"]
    for name, field in [("Review", "reviewed_at"), ("HistoryEvent", "occurred_at"), ("HistoryEvent", "recorded_at"),
                        ("ModelView", "trained_at")]:
        assert schemas[name]["properties"][field]["format"] == "date-time", (name, field)
    assert {"type": "string", "format": "date-time"} in schemas["HistoryPage"]["properties"]["as_of"]["anyOf"]


@pytest.mark.parametrize("name", ["user_id", "movie_id", "version"])
def test_a_path_id_is_one_a_client_can_send_in_a_path(spec, name):
    # '/' would route the request elsewhere, and clients resolve '.' and '..' away (".." in
    # /v1/users/../reviews asks for /v1/reviews): the API never sees such an id, whatever it answers.
    for param in parameters(spec, name):
        assert param["schema"]["minLength"] == 1
        assert not any(matches(param["schema"], bad) for bad in (".", "..", "a/b", "/"))
        assert all(matches(param["schema"], good) for good in ("Zoë K", "m.1", "...", "a%2F", "20240101T000000Z-1"))


def test_list_parameters_say_how_many_items_and_weights_are_plain_decimals(spec):
    [users], [weights], [ids] = (parameters(spec, name) for name in ("users", "weights", "ids"))
    assert [matches(users["schema"], v) for v in ("a,b", ",".join("abcdefgh"), "a", "", ",".join("abcdefghi"))] \
        == [True, True, False, False, False]
    hundred, more = ",".join(map(str, range(100))), ",".join(map(str, range(101)))
    assert [matches(ids["schema"], v) for v in ("m1", hundred, "", more)] == [True, True, False, False]
    assert [matches(weights["schema"], v) for v in ("1,2.5", ".5,3,1", "1_0,1", "inf,1", "1e3,1", " 1,2", "1")] \
        == [True, True, False, False, False, False, False]


def test_a_cursor_or_a_write_token_is_never_empty(spec):
    # The API answers an empty one with a 400 (test_api_input.py): the document says so.
    for param in parameters(spec, "cursor") + parameters(spec, "after"):
        assert param["schema"]["minLength"] == 1


def test_the_idempotency_key_is_visible_ascii(spec):
    for param in parameters(spec, "Idempotency-Key"):
        assert [matches(param["schema"], v) for v in ("k", "two words", "two words\t", "clé")] \
            == [True, True, False, False]


def test_retry_after_and_the_bearer_challenge_are_required_headers(spec):
    answers = [(status, answer) for operations in spec["paths"].values() for op in operations.values()
               for status, answer in op["responses"].items()]
    for status, header in [("401", "WWW-Authenticate"), ("429", "Retry-After"), ("503", "Retry-After")]:
        found = [answer["headers"][header] for code, answer in answers if code == status]
        assert found and all(h["required"] for h in found), status


def test_the_links_lead_from_an_account_to_a_review_read_back_and_retracted(spec):
    def links(path, method, status):
        return {link["operationId"] for link in spec["paths"][path][method]["responses"][status]["links"].values()}

    assert links("/v1/accounts", "post", "201") == {"issue_token"}
    assert links("/v1/tokens", "post", "200") == {"submit_review"}
    assert {"user_reviews", "retract_review"} <= links("/v1/reviews", "post", "202")
    schemathesis.openapi.from_dict(spec).as_state_machine()  # raises if a link names what is not there
