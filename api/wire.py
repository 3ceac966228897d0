"""What crosses the wire: bounded JSON bodies in, JSON out, query parameters and page cursors."""

from __future__ import annotations

import base64
import re

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.problems import FieldProblem, ProblemError

MAX_BODY = 64 * 1024
MAX_LIMIT = 100

# Where msgspec says a body went wrong: "... - at `$.rating`", or "missing required field `rating`".
_AT_FIELD = re.compile(r" - at `\$\.(\w+)|missing required field `(\w+)`")


def json_response(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


async def read_json(request: Request, into: type):
    """Decode a bounded JSON body into a command type, or raise a 4xx problem."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type != "application/json":
        raise ProblemError(415, f"send application/json, not {content_type}")
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY):
        raise ProblemError(413, f"body larger than {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ProblemError(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return msgspec.json.decode(b"".join(chunks), type=into)
    except msgspec.ValidationError as error:
        raise invalid(str(error)) from None
    except msgspec.DecodeError as error:
        raise ProblemError(400, f"invalid JSON: {error}") from None


def invalid(detail: str, field: str | None = None) -> ProblemError:
    """A 422 naming the body's field at fault (`field`, or the one msgspec's message names), if any,
    with what is wrong with it in a few words."""
    about = detail
    if field is None and (found := _AT_FIELD.search(detail)):
        field = found.group(1) or found.group(2)
        about = f"{field} is required" if found.group(2) else detail[:found.start()]
    return ProblemError(422, detail, errors=[FieldProblem(f"#/{field}", about)] if field else None)


def int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:  # isdigit alone takes '²'
        raise ProblemError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def encode_cursor(key: tuple) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode()


def decode_cursor(cursor: str, kind: type):
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()), type=kind)
    except (ValueError, msgspec.DecodeError):  # bad base64 or UTF-8 (both ValueError), or not the key's JSON
        raise ProblemError(400, "cursor is not one this API gave out") from None
