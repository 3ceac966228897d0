"""Deleting one's account ("forget me"): a confirmation page, then DELETE /v1/users/{id} as the
signed-in user, who is signed out. Also what every page shows of a user who asked to be forgotten:
the API answers their reads with a 404 whose detail says so."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from web import signin
from web.client import Answer, Api, segment
from web.rendering import PageError, page, posted_form, render
from web.session import end, session_of

FORGOTTEN = "this user asked to be forgotten"  # in the detail of the API's 404 for such a user
UNAVAILABLE = ("We could not finish deleting your account just now: the service is briefly unavailable. "
               "Send the form again in a moment to finish.")


def forgotten(answer: Answer) -> bool:
    """Whether the API refused a read because a user it names asked to be forgotten."""
    return answer.status == 404 and FORGOTTEN in answer.detail


def forgotten_page(request: Request, user: str) -> Response:
    return render(request, "forgotten.html", 404, user=user)


def own_account(request: Request, user: str, then: str) -> Response | None:
    """Where to send a visitor who may not delete `user`'s account, or None if they are `user`."""
    visitor = session_of(request)
    if visitor is None:
        return signin.sign_in_first(request, then, "delete")
    if visitor.user != user:
        raise PageError(403, f"Only {user} can delete their account.")
    return None


@page
async def confirm(request: Request) -> Response:
    user = request.path_params["user_id"]
    here = f"/users/{segment(user)}/delete"
    return own_account(request, user, here) or render(request, "delete_account.html", user=user)


@page
async def delete_account(request: Request) -> Response:
    user = request.path_params["user_id"]
    await posted_form(request)
    here = f"/users/{segment(user)}/delete"
    if (elsewhere := own_account(request, user, here)) is not None:
        return elsewhere
    async with Api(request, session_of(request).token) as api:
        answer = await api.call("DELETE", f"/v1/users/{segment(user)}")
    if answer.status == 401:  # the session ended since the page was shown
        return signin.sign_in_first(request, here, "expired")
    # Already forgotten: a second tab, or a form sent twice; either way it is done.
    if not (answer.ok or forgotten(answer)):
        message = {503: UNAVAILABLE, 404: f"There is nothing to delete: {user} has no reviews or account here."}
        raise PageError(answer.status, message.get(answer.status, signin.sentence(answer.detail)))
    # Signed out as sign-out does; redirected so that reloading the page sends nothing again.
    response = RedirectResponse("/deleted", 303)
    end(request, response)
    return response


@page
async def deleted(request: Request) -> Response:
    return render(request, "deleted.html")
