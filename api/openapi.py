"""The OpenAPI 3.1 document, built from the routes' declared types."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Iterator

import msgspec
import msgspec.inspect as types_of

from api.problems import MEDIA_TYPE, Problem


RETRY_AFTER = {"description": "seconds to wait before trying again", "required": True,
               "schema": {"type": "integer", "minimum": 0}}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "the Bearer challenge (RFC 6750)", "required": True,
                               "schema": {"type": "string"}}},
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
class Link:
    """Where a success can lead (an OpenAPI link): the operation, and its inputs as runtime
    expressions ("$request.body#/user_id", "$response.body#/token")."""

    name: str
    operation_id: str
    description: str
    parameters: dict[str, str] = field(default_factory=dict)
    body: Any = None


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
    links: tuple[Link, ...] = ()
    plain_errors: tuple[int, ...] = ()  # error statuses answered with the `response` body, not a problem


def document(operations: list[Operation], title: str, version: str) -> dict:
    types = [Problem] + list(dict.fromkeys(t for op in operations for t in (op.response, op.request) if t is not None))
    refs, components = msgspec.json.schema_components(list(types), ref_template="#/components/schemas/{name}")
    date_times(types, components)
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
        body = {"content": {"application/json": {"schema": ref[op.response]}}} if op.response is not None else {}
        entry["responses"][str(op.status)] = {"description": HTTPStatus(op.status).phrase, **body}
        if op.links:
            entry["responses"][str(op.status)]["links"] = {link.name: link_object(link) for link in op.links}
        for status in sorted({*op.errors, *op.plain_errors, *((401, 403) if op.signed_in else ())}):
            entry["responses"][str(status)] = {
                **({"description": HTTPStatus(status).phrase, **body} if status in op.plain_errors else
                   {"description": "problem details (RFC 9457)", "content": {MEDIA_TYPE: {"schema": ref[Problem]}}}),
                **({"headers": ERROR_HEADERS[status]} if status in ERROR_HEADERS else {}),
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": BEARER},
    }


def link_object(link: Link) -> dict:
    return {"operationId": link.operation_id, "description": link.description,
            **({"parameters": link.parameters} if link.parameters else {}),
            **({"requestBody": link.body} if link.body is not None else {})}


def date_times(types: list, components: dict) -> None:
    """Say `format: date-time` of every datetime field: msgspec says it only of those declared with
    `tz=True`, while the API sends every time as RFC 3339 with its zone."""
    seen: set = set()
    for struct in (s for info in types_of.multi_type_info(types) for s in structs(info, seen)):
        properties = components[struct.cls.__name__]["properties"]
        for f in struct.fields:
            if any(isinstance(t, types_of.DateTimeType) for t in getattr(f.type, "types", (f.type,))):
                for schema in properties[f.encode_name].get("anyOf", [properties[f.encode_name]]):
                    if schema.get("type") == "string":
                        schema["format"] = "date-time"


def structs(info: types_of.Type, seen: set) -> Iterator[types_of.StructType]:
    """The struct types `info` is or holds, each once."""
    if isinstance(info, types_of.StructType):
        if info.cls in seen:
            return
        seen.add(info.cls)
        yield info
        held = [f.type for f in info.fields]
    else:  # a container's item, key and value types, a tuple's items, a union's alternatives
        held = [getattr(info, name) for name in ("item_type", "key_type", "value_type") if hasattr(info, name)]
        held += [*getattr(info, "item_types", ()), *getattr(info, "types", ())]
    for inner in held:
        yield from structs(inner, seen)
