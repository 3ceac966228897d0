"""GET /v1/users: user ids to suggest as someone types one (ids are public already, through their
reviews)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.bodies import Reviewers
from api.problems import ProblemError
from api.wire import int_param, json_response
from events.types import UserId, max_length

MAX_PREFIX = max_length(UserId)  # characters of a user id prefix
MAX_REVIEWERS = 20  # user ids in one answer


# A plain def: Starlette runs it in its thread pool.
def reviewers(request: Request) -> Response:
    prefix = request.query_params.get("prefix", "")
    if not 1 <= len(prefix) <= MAX_PREFIX or not prefix.isprintable():
        raise ProblemError(400, f"prefix: the start of a user id, 1 to {MAX_PREFIX} printable characters")
    limit = int_param(request, "limit", 10, 1, MAX_REVIEWERS)
    found = request.app.state.store.reviewers(prefix, limit)
    # Until the projector applies a forgetting, the store still lists the user: never suggest them.
    gone = request.app.state.forgetting.forgotten_among(found)
    return json_response(Reviewers(prefix, [user for user in found if user not in gone]))
