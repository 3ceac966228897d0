"""What crosses the wire: bounded JSON bodies in, JSON out, query parameters and page cursors."""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Callable

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from api.problems import FieldProblem, ProblemError
from commands.types import CommandUserId
from events.types import UserId, max_length

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_LIMIT = 100
MAX_KEY = 255  # characters of an Idempotency-Key

Offset = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # what a store's integer column holds

# Where msgspec says a body went wrong: "... - at `$.rating`", or "missing required field `rating`".
_AT_FIELD = re.compile(r" - at `\$\.(\w+)|missing required field `(\w+)`")


def json_response(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


async def read_json(request: Request, into: type):
    """Decode a bounded JSON body into a command type, or raise a 4xx problem."""
    # Required, not assumed: a cross-site form, no-cors fetch or sendBeacon can send a body without a
    # preflight only as text/plain, a form type or none at all.
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ProblemError(415, f"send Content-Type: application/json, not {content_type or 'none'}")
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY):
        raise ProblemError(413, f"body larger than {MAX_BODY} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise ProblemError(413, f"body larger than {MAX_BODY} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Routine (a closed tab, a lost network, the server's body deadline), and nobody is left to answer.
        log.info("the connection closed before the body was whole", extra={"path": request.url.path})
        raise ProblemError(400, "the body ended early") from None
    body = b"".join(chunks)
    try:
        command = msgspec.json.decode(body, type=into)
    except msgspec.ValidationError as error:
        raise invalid(str(error)) from None
    except msgspec.DecodeError as error:
        raise ProblemError(400, f"invalid JSON: {error}") from None
    # msgspec keeps a repeated key's last value. Checked once the body is valid, so on a command's few
    # fields; json's check costs about 6 µs a review, on top of msgspec's 3, so it runs only when
    # a key might repeat.
    if _may_repeat_a_key(body, into):
        json.loads(body, object_pairs_hook=_unique)
    return command


@functools.cache
def _quoted_keys(into: type) -> tuple[bytes, ...] | None:
    """The keys a body of type `into` may hold, as they appear in JSON; None if it takes any."""
    if not into.__struct_config__.forbid_unknown_fields:
        return None
    return tuple(msgspec.json.encode(field.encode_name) for field in msgspec.structs.fields(into))


def _may_repeat_a_key(body: bytes, into: type) -> bool:
    """False only when no key can repeat: no escapes (a key may be spelt with them) and each key
    the type allows appears once at most (also inside a string, which only costs the full check)."""
    keys = _quoted_keys(into)
    return keys is None or b"\\" in body or max(map(body.count, keys)) > 1


def _unique(pairs: list[tuple[str, object]]) -> dict:
    """json's object_pairs_hook: a key repeated in an object is a 400, not "the last one wins"."""
    fields = dict(pairs)
    if len(fields) < len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ProblemError(400, f"duplicate key {json.dumps(key)} in the body")
            seen.add(key)
    return fields


def invalid(detail: str, field: str | None = None) -> ProblemError:
    """A 422 naming the body's field at fault (`field`, or the one msgspec's message names), if any,
    with what is wrong with it in a few words."""
    about = detail
    if field is None and (found := _AT_FIELD.search(detail)):
        field = found.group(1) or found.group(2)
        about = f"{field} is required" if found.group(2) else detail[:found.start()]
    return ProblemError(422, detail, errors=[FieldProblem(f"#/{field}", about)] if field else None)


# What a user id must be to be written, and so to be read (the rest answers 400, not an empty page).
USER_ID_RULE = f"1 to {max_length(UserId)} characters, not '.' or '..', with no '/' and no control characters"


def path_user_id(request: Request) -> str:
    try:
        return msgspec.convert(request.path_params["user_id"], CommandUserId)
    except msgspec.ValidationError:
        raise ProblemError(400, f"user id: {USER_ID_RULE}") from None


def int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:  # isdigit alone takes '²'
        raise ProblemError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def encode_cursor(key: tuple) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode()


def page_of(rows: list, limit: int, key: Callable[[Any], tuple]) -> tuple[list, str | None]:
    """The first `limit` of rows read as `limit + 1`, and the cursor after them (None: the last page)."""
    page = rows[:limit]
    return page, encode_cursor(key(page[-1])) if len(rows) > limit else None


def decode_cursor(cursor: str, kind: type):
    try:
        key = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()), type=kind)
        for part in key:
            if isinstance(part, datetime):
                in_utc(part)
        return key
    # bad base64 or UTF-8, not the key's JSON, or a time off the calendar in UTC
    except (ValueError, OverflowError, msgspec.DecodeError):
        raise ProblemError(400, "cursor is not one this API gave out") from None


def in_utc(moment: datetime) -> datetime:
    """`moment` in UTC; OverflowError when that falls outside the years 1 to 9999 (0001-01-01T00:00+14:00)."""
    return moment.astimezone(timezone.utc)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= MAX_KEY and key.isascii() and key.isprintable()):
        raise ProblemError(400, f"Idempotency-Key: 1 to {MAX_KEY} visible ASCII characters")
    return key
