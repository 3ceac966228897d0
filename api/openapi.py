"""The OpenAPI 3.1 document, built from the routes' declared types."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import msgspec

from api.problems import MEDIA_TYPE, Problem


RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer", "minimum": 0}}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "the Bearer challenge (RFC 6750)", "schema": {"type": "string"}}},
    429: {"Retry-After": RETRY_AFTER},
    503: {"Retry-After": RETRY_AFTER},
}
BEARER = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                     "description": "an access_token from POST /v1/tokens"}}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    description: str
    schema: dict = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    status: int
    response: Any = None
    request: Any = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""
    operation_id: str = ""
    signed_in: bool = False  # needs a bearer token (401 without, 403 for another user's data)


def document(operations: list[Operation], title: str, version: str) -> dict:
    types = [Problem] + list(dict.fromkeys(t for op in operations for t in (op.response, op.request) if t is not None))
    refs, components = msgspec.json.schema_components(list(types), ref_template="#/components/schemas/{name}")
    ref = dict(zip(types, refs))
    paths: dict[str, dict] = {}
    for op in operations:
        entry: dict[str, Any] = {"summary": op.summary, "responses": {}}
        if op.operation_id:
            entry["operationId"] = op.operation_id
        if op.description:
            entry["description"] = op.description
        if op.params:
            entry["parameters"] = [
                {"name": p.name, "in": p.where, "description": p.description,
                 "required": p.required or p.where == "path", "schema": p.schema}
                for p in op.params
            ]
        if op.request is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[op.request]}}}
        if op.signed_in:
            entry["security"] = [{"bearer": []}]
        ok: dict[str, Any] = {"description": HTTPStatus(op.status).phrase}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": ref[op.response]}}
        entry["responses"][str(op.status)] = ok
        for status in sorted({*op.errors, *((401, 403) if op.signed_in else ())}):
            entry["responses"][str(status)] = {
                "description": "problem details (RFC 9457)",
                "content": {MEDIA_TYPE: {"schema": ref[Problem]}},
                **({"headers": ERROR_HEADERS[status]} if status in ERROR_HEADERS else {}),
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": BEARER},
    }
