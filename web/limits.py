"""What the forms' fields may hold, as the API's OpenAPI document declares it: the pages state the
API's own limits, and show them before anyone sends a form."""

from __future__ import annotations

from web.client import Api

_limits: dict = {}  # the API's document does not change while the process runs: read it once


async def input_limits(api: Api) -> dict:
    if not _limits:
        _limits.update(read_limits((await api.get("/openapi.json")).body))
    return _limits


def read_limits(spec: dict) -> dict:
    review, account = _fields(spec, "/v1/reviews"), _fields(spec, "/v1/accounts")
    rating = review["rating"]
    steps = round((rating["maximum"] - rating["minimum"]) / rating["multipleOf"])
    return {"ratings": [rating["minimum"] + n * rating["multipleOf"] for n in range(steps + 1)],
            "summary": review["summary"]["maxLength"], "text": review["text"]["maxLength"],
            "password": (account["password"]["minLength"], account["password"]["maxLength"])}


def _fields(spec: dict, path: str) -> dict:
    """The properties of what POST `path` takes."""
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
