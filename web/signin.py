"""Signing up, in and out. Signing in asks the API for an access token (POST /v1/tokens), which
the session cookie then carries (web/session.py); signing up opens the account first
(POST /v1/accounts). The API's refusals show beside the form."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from web.client import Answer, Api, segment
from web.limits import input_limits
from web.rendering import page, posted_form, render
from web.session import Session, end, safe_next, start

REASONS = {  # why the visitor was sent to sign in
    "write": "Sign in to write or retract your reviews.",
    "expired": "Your session has ended: sign in again to carry on.",
    "opened": "Your account is open: sign in with it.",
    "private": "Histories of reviews are private here: sign in to see yours.",
    "delete": "Sign in to delete your account.",
}
UNAVAILABLE = "The service is briefly unavailable: nothing was changed. Send the form again in a moment."


def sign_in_first(request: Request, then: str, why: str) -> Response:
    """Send the visitor to sign in and come back to `then`, ending a session the API no longer takes."""
    response = RedirectResponse("/signin?" + urlencode({"next": then, "why": why}), 303)
    end(request, response)
    return response


def filled(fields: dict[str, str]) -> dict[str, str]:
    """The fields with a value: for a missing one the API says "... is required"."""
    return {name: value for name, value in fields.items() if value != ""}


def sentence(text: str) -> str:
    """An API detail ("wrong user id or password") as a sentence."""
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


@page
async def sign_in_form(request: Request) -> Response:
    query = request.query_params
    return render(request, "signin.html", values={"user_id": query.get("user_id", "")},
                  next=safe_next(query.get("next")), notice=REASONS.get(query.get("why", "")))


@page
async def sign_in(request: Request) -> Response:
    form = await posted_form(request)
    credentials = filled({"user_id": form.get("user_id", "").strip(), "password": form.get("password", "")})
    async with Api(request) as api:
        answer = await api.call("POST", "/v1/tokens", json=credentials)
    if not answer.ok:
        return refused(request, "signin.html", form, answer)
    return signed_in(request, credentials["user_id"], answer, destination(form, credentials["user_id"]))


@page
async def sign_up_form(request: Request) -> Response:
    async with Api(request) as api:
        return render(request, "signup.html", values={}, next=safe_next(request.query_params.get("next")),
                      limits=await input_limits(api))


@page
async def sign_up(request: Request) -> Response:
    form = await posted_form(request)
    account = filled({"user_id": form.get("user_id", "").strip(), "password": form.get("password", "")})
    async with Api(request) as api:
        limits = await input_limits(api)
        if form.get("password") != form.get("password_again"):
            return render(request, "signup.html", 422, values={"user_id": form.get("user_id", "")},
                          next=safe_next(form.get("next")), limits=limits,
                          errors={"password_again": "The two passwords differ: type the same one twice."})
        opened = await api.call("POST", "/v1/accounts", json=account)
        if not opened.ok:
            return refused(request, "signup.html", form, opened, limits=limits)
        answer = await api.call("POST", "/v1/tokens", json=account)
    if not answer.ok:  # opened, but a sign-in right now was refused (the service went away)
        return sign_in_first(request, destination(form, account["user_id"]), "opened")
    return signed_in(request, account["user_id"], answer, destination(form, account["user_id"]))


@page
async def sign_out(request: Request) -> Response:
    await posted_form(request)
    response = RedirectResponse("/", 303)
    end(request, response)
    return response


def destination(form: dict[str, str], user: str) -> str:
    """Where signing in goes: the form's `next` if it is a page of this site, else the user's page."""
    return safe_next(form.get("next")) or f"/users/{segment(user)}"


def signed_in(request: Request, user: str, answer: Answer, then: str) -> Response:
    response = RedirectResponse(then, 303)
    start(request, response, Session(user, answer.body["access_token"]), answer.body["expires_in"])
    return response


def in_words(seconds: int) -> str:
    """A wait as a person says it: seconds, or rounded up to minutes or hours when long."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            count = -(-seconds // size)
            return f"{count} {unit}s"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def refused(request: Request, name: str, form: dict[str, str], answer: Answer, **context) -> Response:
    """The form again (never its passwords) with what the API said: a field's problem beside it,
    anything else above the form, and the fields it is about marked."""
    status, headers, errors, blamed = answer.status, {}, {}, ()
    message = sentence(answer.detail)
    if answer.status == 401:
        # Wrong credentials; a page's 401 would need an HTTP authentication challenge, a 403 does not.
        status, blamed = 403, ("user_id", "password")
    elif answer.status == 409:
        errors, message = {"user_id": message}, None
    elif answer.status == 422 and answer.field_errors():
        errors, message = answer.field_errors(), None
    elif answer.status == 429:
        wait = answer.headers.get("retry-after", "")
        if wait.isdigit():
            headers = {"Retry-After": wait}
            message += f" Try again in {in_words(int(wait))}."
    elif answer.status == 503:
        message = UNAVAILABLE
    values = {"user_id": form.get("user_id", "")}
    return render(request, name, status, headers, values=values, next=safe_next(form.get("next")), errors=errors,
                  blamed=blamed, message=message, **context)
