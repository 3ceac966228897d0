"""RFC 9457 problem details: the shape of every error the API answers."""

from __future__ import annotations

import logging
from http import HTTPStatus

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response


log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"


class FieldProblem(msgspec.Struct):
    """What is wrong with one field of a request body; `pointer` is a JSON Pointer fragment ("#/rating")."""

    pointer: str
    detail: str


class Problem(msgspec.Struct, omit_defaults=True):
    """An error, as RFC 9457 describes it; a 422 names the fields at fault in `errors`."""

    title: str
    status: int
    detail: str = ""
    type: str = "about:blank"
    instance: str = ""
    errors: list[FieldProblem] = []


class ProblemError(Exception):
    """Raise from a handler to answer with a problem."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None,
                 errors: list[FieldProblem] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.errors = errors or []


def problem(status: int, detail: str, instance: str = "", headers: dict[str, str] | None = None,
            errors: list[FieldProblem] | None = None) -> Response:
    return Response(problem_body(status, detail, instance, errors), status_code=status, media_type=MEDIA_TYPE,
                    headers=headers)


def problem_body(status: int, detail: str, instance: str = "", errors: list[FieldProblem] | None = None) -> bytes:
    """A problem's JSON (also for answers written below Starlette, by the HTTP server itself)."""
    return msgspec.json.encode(Problem(title=HTTPStatus(status).phrase, status=status, detail=detail,
                                       instance=instance, errors=errors or []))


async def on_problem(request: Request, error: ProblemError) -> Response:
    return problem(error.status, error.detail, request.url.path, error.headers, error.errors)


async def on_http_error(request: Request, error: HTTPException) -> Response:
    return problem(error.status_code, error.detail, request.url.path, error.headers)


async def on_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "internal error; it has been logged", request.url.path)


HANDLERS = {ProblemError: on_problem, HTTPException: on_http_error, Exception: on_unexpected}
