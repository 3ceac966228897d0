"""Forgetting: `DELETE /v1/users/{user_id}` (as that user), and the answer every read of a user who
asked to be forgotten gets."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.auth import PER_USER, PER_USER_AND_CLIENT, authorize, client_address
from api.problems import ProblemError
from api.wire import json_response, path_user_id
from commands.forgetting import Forgetting, NothingToForget
from events.log import LogUnavailable

log = logging.getLogger(__name__)

FORGOTTEN = "this user asked to be forgotten"


def refuse_forgotten(request: Request, user_ids: list[str]) -> None:
    """Raise a 404 if one of these users asked to be forgotten (synchronous: a key-store read)."""
    forgetting: Forgetting = request.app.state.forgetting
    if (user_id := forgetting.forgotten(user_ids)) is not None:
        raise ProblemError(404, f"{user_id}: {FORGOTTEN}" if len(user_ids) > 1 else FORGOTTEN)


async def forget_user(request: Request) -> Response:
    user_id = path_user_id(request)
    authorize(request, user_id)
    # Before forgetting: its rewrite of the store's file then takes the attempts' bytes too.
    attempts = request.app.state.auth.attempts
    await run_in_threadpool(attempts.clear_attempts, PER_USER.key(user_id))
    await run_in_threadpool(attempts.clear_attempts, PER_USER_AND_CLIENT.key(user_id, client_address(request)))
    try:
        receipt = await request.app.state.forgetting.forget(user_id)
    except NothingToForget as error:
        raise ProblemError(404, str(error)) from None
    except LogUnavailable as error:
        log.warning("append failed", extra={"error": str(error)})
        raise ProblemError(503, "the event log is unavailable: the user id is retired; send the request again to "
                                "finish forgetting",
                           {"Retry-After": "1"}) from None
    return json_response(receipt, 202)
