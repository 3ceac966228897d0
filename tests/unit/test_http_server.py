"""Request bodies with a repeated key (issue 13): refused with a 400 naming the key, not read as
"the last one wins". The server's timeouts and its answers to broken requests are in
tests/integration/test_http_server.py."""

from __future__ import annotations

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from api.problems import HANDLERS
from api.wire import read_json
from tests.unit.test_api import is_problem

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("body", [
    b'{"user_id": "ana", "movie_id": "m", "rating": 1, "rating": 5}',
    b'{"user_id": "ana", "movie_id": "m", "rating": 5, "rat\\u0069ng": 1}',  # the same key, escaped
])
def test_a_review_with_a_repeated_key_is_a_400_naming_it(world, body):
    client, log, _ = world
    response = client.post("/v1/reviews", content=body, headers={"Content-Type": "application/json"})
    assert '"rating"' in is_problem(response, 400)["detail"]
    assert log.events == []


class Inner(msgspec.Struct):
    name: str


class Outer(msgspec.Struct):
    items: list[Inner]


async def echo(request: Request) -> Response:
    return Response(msgspec.json.encode(await read_json(request, Outer)), media_type="application/json")


def test_a_key_repeated_in_a_nested_object_is_a_400_naming_it():
    with TestClient(Starlette(routes=[Route("/", echo, methods=["POST"])], exception_handlers=HANDLERS)) as client:
        response = client.post("/", content=b'{"items": [{"name": "a"}, {"name": "b", "name": "c"}]}', headers=JSON)
        assert '"name"' in is_problem(response, 400)["detail"]
        assert client.post("/", content=b'{"items": [{"name": "a"}, {"name": "b"}]}', headers=JSON).json() == {
            "items": [{"name": "a"}, {"name": "b"}]}
