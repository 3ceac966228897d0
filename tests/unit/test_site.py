"""The website's pages over the real API app, an in-memory log and a real SQLite store (the browser
flows against the real stack are in tests/integration/test_site_browser.py)."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.tokens import TokenSigner
from commands.handlers import ReviewCommands
from events.types import MovieCatalogued, ReviewSubmitted, SubjectForgotten
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import ACCOUNTS, TOKEN_KEY, MemoryLog, bearer, memory_auth, memory_forgetting
from tests.unit.test_api import project
from tests.unit.test_match import MOVIES as MODEL_MOVIES
from tests.unit.test_match import T0, catalogue, publish
from web import pages
from web.static import static_url

MOVIES = {"sw": ("Star Wars", 1977, ("Action", "Sci-Fi")), "am": ("Amélie", 2001, ("Comedy",)),
          "h": ("Heat", 1995, ("Crime",))}
PASSWORD = "correct horse battery"
CSRF_KEY = b"unit-tests-csrf-key"


def site_app(tmp_path, **auth_options):
    log = MemoryLog()
    store = SQLiteStore(tmp_path / "p.db")
    catalogue(log, store, MOVIES)
    return api_process(log, store, **auth_options), log, store


def api_process(log, store, csrf_key: bytes = CSRF_KEY, **auth_options):
    """One API process with the site, over `log` and `store`."""
    app = create_app(store, log, ReviewCommands(log), memory_auth(log, store, **auth_options),
                     memory_forgetting(log, store, store.path.with_name("keys.db")), site=pages.routes(),
                     not_found=pages.not_found)
    app.state.csrf_key = csrf_key
    return app


@pytest.fixture
def site(tmp_path):
    app, log, store = site_app(tmp_path)
    with TestClient(app) as client:
        yield client, log, store
    store.close()


def text(response) -> str:
    """The page's visible text, roughly: tags dropped, blanks squeezed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text))


def readable(response, status: int, *phrases: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    shown = text(response)
    assert "Traceback" not in response.text and "problem+json" not in shown
    for phrase in phrases:
        assert phrase in shown, shown
    return shown


def hidden(response, action: str) -> dict[str, str]:
    """The hidden fields of the page's form that posts to `action`."""
    form = re.search(rf'<form [^>]*action="{re.escape(action)}".*?</form>', response.text, re.S)
    assert form, f"no form posts to {action}: {response.text}"
    return {name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0))}


def sign_up(client, user: str, password: str = PASSWORD, again: str | None = None, next: str | None = None):
    form = hidden(client.get("/signup", params={"next": next} if next else None), "/signup")
    return client.post("/signup", data={**form, "user_id": user, "password": password,
                                        "password_again": password if again is None else again},
                       follow_redirects=False)


def sign_in(client, user: str, password: str = PASSWORD, next: str | None = None):
    form = hidden(client.get("/signin", params={"next": next} if next else None), "/signin")
    return client.post("/signin", data={**form, "user_id": user, "password": password}, follow_redirects=False)


def signed_in(client, user: str) -> None:
    """`client` signed in as `user`, with an account opened for them."""
    assert sign_up(client, user).status_code == 303


def submit(client, **fields):
    """Send the review form as the page gives it (its CSRF token and key), with these fields."""
    form = hidden(client.get("/review"), "/review")
    return client.post("/review", data={**form, **fields}, follow_redirects=False)


def cookies(response) -> dict[str, str]:
    """The Set-Cookie headers of a response, by cookie name."""
    return {line.split("=", 1)[0]: line for line in response.headers.get_list("set-cookie")}


def test_the_home_page_offers_the_strategies_and_the_catalogues_genres(site):
    client = site[0]
    shown = readable(client.get("/"), 200, "What should you watch together?", "least misery", "Crime")
    assert client.get("/").headers["content-security-policy"].startswith("default-src 'self'")
    assert "multiplicative" in shown


def test_a_search_without_a_model_or_with_unknown_users_says_so(site):
    client, log, store = site
    readable(client.get("/", params={"user": ["ana", "bob"]}), 503, "Suggestions are not available yet",
             "harmony train")


def test_a_member_the_model_cannot_use_gets_popular_movies_and_is_told_so(site):
    client, log, store = site
    publish(store)  # knows ana and ben, and movies m00..
    client.post("/v1/reviews", headers=bearer("cy"), json={"user_id": "cy", "movie_id": "h", "rating": 4})  # a movie it does not know
    project(log, store)
    readable(client.get("/", params={"user": ["ana", "cy"]}), 200, "For ana, cy",
             "cy has no reviews the model can use yet")
    readable(client.get("/", params={"user": ["ana", "zed"]}), 404, "We know nothing about some of these people",
             "zed")


def test_any_other_address_is_a_page_and_api_addresses_keep_their_problems(site):
    client = site[0]
    readable(client.get("/no/such/page"), 404, "There is no page at this address")
    for method, path, status in [("GET", "/v1/nothing", 404), ("GET", "/static/nothing.css", 404),
                                 ("POST", "/no/such/page", 404), ("GET", "/v1/reviews", 405),
                                 ("DELETE", "/v1/movies/h", 405), ("POST", "/", 405)]:
        response = client.request(method, path)
        assert response.status_code == status, (method, path)
        assert response.headers["content-type"] == "application/problem+json"


def test_signing_up_signs_in_then_the_user_writes_a_review_and_retracts_it(site):
    client, log, store = site
    readable(client.get("/"), 200, "Sign in · Sign up")
    response = sign_up(client, "ana")
    assert response.status_code == 303 and response.headers["location"] == "/users/ana"
    session = cookies(response)["session"]
    assert session.startswith("session=ana:")
    for flag in ("HttpOnly", "Max-Age=3600", "Path=/", "SameSite=lax"):
        assert flag in session, session
    assert "Secure" not in session  # the site was asked over http
    shown = readable(client.get("/users/ana"), 200, "Signed in as ana · Sign out", "ana has no current reviews")
    assert "Sign up" not in shown
    response = submit(client, movie_id="am", rating="4.5", summary="Lovely", text="So Parisian.")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/users/ana?after=")
    project(log, store)
    readable(client.get(response.headers["location"]), 200, "Your review was saved.", "Amélie (2001)", "★★★★½",
             "Lovely")
    own = client.get("/users/ana")
    response = client.post("/users/ana/reviews/am/retract", data=hidden(own, "/users/ana/reviews/am/retract"),
                           follow_redirects=False)
    assert response.status_code == 303
    project(log, store)
    shown = readable(client.get(response.headers["location"]), 200, "Your review was retracted.")
    assert "Amélie" not in shown and "ana has no current reviews" in shown
    assert store.user_ratings("ana") == {}


def test_over_https_the_cookies_are_secure_and_host_only(tmp_path):
    app, log, store = site_app(tmp_path)
    client = TestClient(app, base_url="https://testserver")
    response = sign_up(client, "ana")
    assert response.status_code == 303
    set = cookies(response)
    assert set["__Host-session"].endswith("Secure") and "Path=/" in set["__Host-session"]
    assert "csrf" not in set  # given with the sign-up page, as __Host-csrf
    assert "__Host-csrf" in client.cookies and "csrf" not in client.cookies
    readable(client.get("/users/ana"), 200, "Signed in as ana")
    store.close()


def test_signing_out_ends_the_session(site):
    client, log, store = site
    signed_in(client, "ana")
    page = client.get("/users/ana")
    response = client.post("/signout", data=hidden(page, "/signout"), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert 'session=""; ' in cookies(response)["session"] and "Max-Age=0" in cookies(response)["session"]
    readable(client.get("/"), 200, "Sign in · Sign up")
    assert client.get("/review", follow_redirects=False).status_code == 303


def test_a_wrong_password_shows_the_apis_message_beside_the_form(site):
    client, log, store = site
    signed_in(client, "ana")
    client.cookies.clear()
    response = sign_in(client, "ana", "not the password")
    shown = readable(response, 403, "Wrong user id or password.")
    assert '<p class="problem" role="alert" id="problem">' in response.text
    for field in ("user_id", "password"):
        assert re.search(rf'id="{field}"[^>]*aria-describedby="problem" aria-invalid="true"', response.text)
    assert 'value="ana"' in response.text and "not the password" not in response.text
    assert "session" not in cookies(response) and "Sign in · Sign up" in shown
    assert sign_in(client, "ana").headers["location"] == "/users/ana"


def test_sign_up_shows_a_taken_id_a_short_password_and_differing_passwords_beside_their_fields(site):
    client, log, store = site
    signed_in(client, "ana")
    client.cookies.clear()
    response = sign_up(client, "ana")
    readable(response, 409, "Please correct what is marked below", "already has an account")
    assert re.search(r'id="user_id"[^>]*aria-describedby="user_id-error user_id-help" aria-invalid="true"',
                     response.text)
    response = sign_up(client, "bea", "short")
    readable(response, 422, "8 to 1024 characters")  # the API's limits, from its OpenAPI document
    assert re.search(r'<span class="error" id="password-error">[^<]*8', response.text)
    response = sign_up(client, "bea", again="something else entirely")
    readable(response, 422, "The two passwords differ")
    assert 'id="password_again-error"' in response.text and 'value="bea"' in response.text
    assert [e.user_id for e in log.topics[ACCOUNTS]] == ["ana"]


def test_validation_errors_show_next_to_their_fields_and_keep_what_was_typed(site):
    client = site[0]
    signed_in(client, "ana")
    response = submit(client, movie_id="am", summary="Kept")
    readable(response, 422, "Please correct what is marked below", "rating is required")
    assert re.search(r'<span class="error" id="rating-error">', response.text)
    assert re.search(r'<fieldset class="rating" aria-describedby="rating-error" aria-invalid="true">', response.text)
    assert 'value="Kept"' in response.text and 'value="am" checked' in response.text


def test_a_broker_outage_on_submit_is_a_readable_503_with_the_form_kept(site):
    client, log, _ = site
    signed_in(client, "ana")
    log.down = True
    response = submit(client, movie_id="h", rating="2", summary="Long", key="k-1")
    readable(response, 503, "could not save your review just now", "Nothing was saved")
    assert 'value="Long"' in response.text and 'name="key" value="k-1"' in response.text


def test_the_review_form_sends_a_visitor_who_is_not_signed_in_to_sign_in_and_back(site):
    client = site[0]
    response = client.get("/review", params={"q": "heat"}, follow_redirects=False)
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query) == {"next": ["/review?q=heat"], "why": ["write"]}
    readable(client.get(response.headers["location"]), 200, "Sign in to write or retract your reviews")
    signed_in(client, "ana")
    client.post("/signout", data=hidden(client.get("/"), "/signout"))
    response = sign_in(client, "ana", next="/review?q=heat")
    assert response.headers["location"] == "/review?q=heat"
    readable(client.get(response.headers["location"]), 200, "As ana", "Heat (1995)")


def test_the_address_to_come_back_to_is_always_a_page_of_this_site(site):
    client = site[0]
    signed_in(client, "ana")
    for elsewhere in ("//evil.example", "https://evil.example/", "/\\evil.example", "/\t/evil.example",
                      "evil.example", "javascript:alert(1)", " //evil.example"):
        assert sign_in(client, "ana", next=elsewhere).headers["location"] == "/users/ana", elsewhere
        assert 'name="next"' not in client.get("/signin", params={"next": elsewhere}).text
    assert sign_in(client, "ana", next="/users/ana/history?on=2024-01-01").headers["location"] == \
        "/users/ana/history?on=2024-01-01"
    assert sign_up(client, "bea", next="//evil.example").headers["location"] == "/users/bea"


@pytest.mark.parametrize("action", ["/review", "/users/ana/reviews/am/retract", "/users/ana/delete", "/signin",
                                    "/signup", "/signout"])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(site, action):
    client, log, store = site
    signed_in(client, "ana")
    assert submit(client, movie_id="am", rating="4").status_code == 303
    project(log, store)
    events, accounts = len(log.events), len(log.topics[ACCOUNTS])
    fields = {"movie_id": "h", "rating": "2", "user_id": "bea", "password": PASSWORD, "password_again": PASSWORD}
    token = hidden(client.get("/users/ana"), "/signout")["csrf"]
    for wrong in (None, "x" * 43, token[:-1], client.cookies["csrf"]):  # the last: the cookie's own value
        form = fields if wrong is None else {**fields, "csrf": wrong}
        readable(client.post(action, data=form, follow_redirects=False), 403, "Nothing was changed")
    assert len(log.events) == events and len(log.topics[ACCOUNTS]) == accounts
    readable(client.get("/users/ana"), 200, "Signed in as ana", "Amélie")  # still signed in, review kept
    # the same form with the token from another visitor's page is refused too
    other = TestClient(client.app)
    readable(other.post(action, data={**fields, "csrf": token}), 403, "Nothing was changed")


def test_a_csrf_cookie_planted_by_someone_else_does_not_let_their_form_through(site):
    # Whoever can set a cookie for the site (a neighbouring subdomain, a network attacker on http)
    # plants a seed of their choosing, or one with a valid token from their own visit to the site.
    client, log, store = site
    signed_in(client, "ana")
    attacker = TestClient(client.app)
    own_token = hidden(attacker.get("/signin"), "/signin")["csrf"]
    forged = {"movie_id": "h", "rating": "1", "key": "forged"}
    for seed, token in (("p" * 43, "p" * 43), (attacker.cookies["csrf"], own_token)):
        client.cookies.delete("csrf")
        client.cookies.set("csrf", seed)
        readable(client.post("/review", data={**forged, "csrf": token}), 403, "Nothing was changed")
        readable(client.post("/signout", data={"csrf": token}), 403, "Nothing was changed")
    assert len(log.events) == len(MOVIES)  # the catalogue's only
    readable(client.get("/users/ana"), 200, "Signed in as ana")


def test_the_csrf_token_changes_at_sign_in_and_at_sign_out(site):
    client = site[0]
    before = hidden(client.get("/signin"), "/signin")["csrf"]
    response = sign_up(client, "ana")
    assert "csrf" in cookies(response)  # a new seed with the session
    readable(client.post("/signout", data={"csrf": before}), 403, "Nothing was changed")
    during = hidden(client.get("/users/ana"), "/signout")["csrf"]
    assert during != before
    response = client.post("/signout", data={"csrf": during}, follow_redirects=False)
    assert response.status_code == 303 and "csrf" in cookies(response)
    readable(client.post("/signin", data={"csrf": during, "user_id": "ana", "password": PASSWORD}), 403,
             "Nothing was changed")
    assert sign_in(client, "ana").status_code == 303


def test_a_form_one_api_process_rendered_is_accepted_by_another_with_the_same_key(site):
    client, log, store = site
    signed_in(client, "ana")
    form = hidden(client.get("/users/ana"), "/signout")
    for key, status in ((b"another key", 403), (CSRF_KEY, 303)):
        other = TestClient(api_process(log, store, key), cookies=client.cookies)
        assert other.post("/signout", data=form, follow_redirects=False).status_code == status


def test_only_the_signed_in_users_own_page_has_retract_buttons(site):
    client, log, store = site
    signed_in(client, "ana")
    assert submit(client, movie_id="am", rating="4").status_code == 303
    project(log, store)
    assert "Retract" in client.get("/users/ana").text
    client.cookies.clear()
    shown = readable(client.get("/users/ana"), 200, "Amélie")
    assert "Retract" not in shown and "/retract" not in client.get("/users/ana").text
    signed_in(client, "bea")
    page = client.get("/users/ana")
    assert "/retract" not in page.text
    # a retract sent anyway, as bea, with her CSRF token: the API refuses it, nothing is appended
    events = len(log.events)
    response = client.post("/users/ana/reviews/am/retract", data={**hidden(page, "/signout"), "key": "k"})
    readable(response, 403, "another user")
    assert len(log.events) == events


def test_an_expired_session_sends_the_user_to_sign_in_again_keeping_the_review(site):
    client, log, store = site
    signed_in(client, "ana")
    expired = TokenSigner(TOKEN_KEY, 60, clock=lambda: 1_000_000).issue("ana")
    client.cookies.set("session", f"ana:{expired}")  # the form is shown, then its token expires
    form, events = hidden(client.get("/review"), "/review"), len(log.events)
    response = client.post("/review", data={**form, "movie_id": "h", "rating": "3", "summary": "Tense"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/signin?")
    assert "Max-Age=0" in cookies(response)["session"]
    then = parse_qs(urlsplit(response.headers["location"]).query)["next"][0]
    readable(client.get(response.headers["location"]), 200, "Your session has ended: sign in again")
    response = sign_in(client, "ana", next=then)
    assert response.headers["location"] == then
    again = client.get(then)
    assert 'value="Tense"' in again.text and 'value="h" checked' in again.text
    assert hidden(again, "/review")["key"] == form["key"]  # sending it again is the same request
    assert len(log.events) == events


def test_private_histories_are_shown_to_their_owner_only(tmp_path):
    app, log, store = site_app(tmp_path, private_history=True)
    client = TestClient(app)
    signed_in(client, "ana")
    assert submit(client, movie_id="am", rating="4").status_code == 303
    project(log, store)
    readable(client.get("/users/ana/history"), 200, "Reviewed Amélie")
    signed_in(client, "bea")
    readable(client.get("/users/ana/history"), 403, "Only ana can see the history of their reviews")
    client.cookies.clear()
    response = client.get("/users/ana/history", follow_redirects=False)
    assert parse_qs(urlsplit(response.headers["location"]).query) == {"next": ["/users/ana/history"],
                                                                      "why": ["private"]}
    store.close()


def test_failed_sign_ins_count_against_the_browsers_address_which_no_header_changes(tmp_path):
    app, log, store = site_app(tmp_path)
    app.state.auth.clock = lambda: 1_000_000.0  # no time passes
    with TestClient(app, client=("198.51.100.7", 40000)) as first:
        signed_in(first, "ana")
        first.cookies.clear()
        for _ in range(5):
            readable(sign_in(first, "ana", "wrong password"), 403, "Wrong user id or password")
        response = sign_in(first, "ana")
        readable(response, 429, "Too many failed sign-ins", "Try again in 1 second.")
        assert response.headers["retry-after"] == "1"
        first.headers["X-Forwarded-For"] = "203.0.113.9"
        assert sign_in(first, "ana").status_code == 429
        second = TestClient(app, client=("203.0.113.9", 40000))
        assert sign_in(second, "ana").headers["location"] == "/users/ana"  # another browser is not held up
    store.close()


def test_too_many_sign_ups_from_one_address_say_how_long_to_wait(tmp_path):
    app, _, store = site_app(tmp_path, openings_per_hour=1)
    with TestClient(app) as client:
        signed_in(client, "ana")
        client.cookies.clear()
        response = sign_up(client, "bea")
        readable(response, 429, "Too many accounts opened from this address", "Try again in 60 minutes.")
        assert response.headers["retry-after"] in ("3599", "3600")
    store.close()


def test_a_users_reviews_page_through_and_the_history_goes_back_in_time(site):
    client, log, store = site
    for n, (movie, day) in enumerate([("sw", "2024-01-01"), ("am", "2024-02-01"), ("h", "2024-03-01")] * 4):
        client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": movie, "rating": 1 + n % 5,
                                         "reviewed_at": f"{day}T00:00:00Z"})
    for n in range(12):
        client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": f"x{n:02}", "rating": 3})
    project(log, store)
    first = client.get("/users/ana")
    readable(first, 200, "Current reviews, newest first")
    older = re.search(r'href="(/users/ana\?cursor=[^"]+)" rel="next"', first.text).group(1)
    readable(client.get(older.replace("&amp;", "&")), 200, "Older reviews", "Heat (1995)", "Star Wars (1977)")
    history = readable(client.get("/users/ana/history"), 200, "Every change, newest first", "Changed the review of")
    assert "Older changes" in history
    readable(client.get("/users/ana/history", params={"on": "1999-12-31"}), 200, "had no reviews then")


def test_the_history_page_shows_imported_reviews_by_their_own_dates_or_as_the_log_recorded_them(site):
    client, log, store = site
    written, today = datetime(1997, 11, 20, 6, 0, tzinfo=timezone.utc), datetime.now(timezone.utc)
    asyncio.run(log.append(ReviewSubmitted(event_id="ml-ana-h", occurred_at=written, recorded_at=today, user_id="ana",
                                           movie_id="h", rating=4.0, reviewed_at=written, source="movielens")))
    client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "sw", "rating": 5})
    project(log, store)

    def stood(response) -> str:
        found = re.search(r'<section aria-labelledby="stood">.*?</section>', response.text, re.S)
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))) if found else ""

    as_written = client.get("/users/ana/history", params={"on": "1997-12-31"})  # "as written" is the default
    readable(as_written, 200, "Dates on this page are as written", "Reviews as written by the end of 1997-12-31",
             "Changes written by then", "Reviewed Heat", f"(recorded {today:%-d %b %Y})")
    assert "Heat" in stood(as_written) and "written 20 Nov 1997" in stood(as_written)
    assert "Star Wars" not in as_written.text
    assert re.search(r'value="written" checked', as_written.text)
    as_recorded = client.get("/users/ana/history", params={"on": "1997-12-31", "clock": "recorded"})
    readable(as_recorded, 200, "Dates on this page are as recorded by the log",
             "None: the log had recorded no reviews of ana’s by then", "No changes recorded by then")
    assert "Heat" not in stood(as_recorded) and re.search(r'value="recorded" checked', as_recorded.text)
    assert 'href="/users/ana/history?clock=recorded">All of it' in as_recorded.text
    now = client.get("/users/ana/history", params={"on": f"{today:%Y-%m-%d}", "clock": "recorded"})
    readable(now, 200, "Reviews as the log had them", "Changes recorded by then", "(written 20 Nov 1997)")
    assert "Heat" in stood(now) and "Star Wars" in stood(now)
    readable(client.get("/users/ana/history"), 200, "Every change, newest first", "20 Nov 1997, 06:00 UTC")
    readable(client.get("/users/ana/history", params={"clock": "sundial"}), 400, "is not a clock")


def test_unknown_users_and_bad_dates_are_readable_pages(site):
    client = site[0]
    readable(client.get("/users/nobody"), 404, "We have no reviews by “nobody”")
    readable(client.get("/users/nobody/history"), 404, "never reviewed anything")
    client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "h", "rating": 2})
    readable(client.get("/users/ana/history", params={"on": "yesterday"}), 400, "is not a date")


def test_only_the_signed_in_user_reaches_the_deletion_of_their_own_account(site):
    client, log, store = site
    response = client.get("/users/ana/delete", follow_redirects=False)
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query) == {"next": ["/users/ana/delete"],
                                                                      "why": ["delete"]}
    readable(client.get(response.headers["location"]), 200, "Sign in to delete your account.")
    signed_in(client, "bea")
    assert "Delete my account" in client.get("/users/bea").text
    client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "h", "rating": 2})
    assert "Delete my account" not in client.get("/users/ana").text
    readable(client.get("/users/ana/delete"), 403, "Only ana can delete their account.")
    form = hidden(client.get("/users/bea/delete"), "/users/bea/delete")
    readable(client.post("/users/ana/delete", data=form), 403, "Only ana can delete their account.")
    assert not any(isinstance(e, SubjectForgotten) for e in log.events)


def test_confirming_forgets_the_user_signs_them_out_and_their_pages_say_so(site):
    client, log, store = site
    publish(store)  # a model that knows ana and ben
    client.app.state.forgetting.keys.subjects(["ana"])  # as sealing the account's events makes the user's key
    signed_in(client, "ana")
    assert submit(client, movie_id="am", rating="4", summary="Mine").status_code == 303
    project(log, store)
    own = client.get("/users/ana")
    assert 'href="/users/ana/delete">Delete my account and reviews</a>' in own.text
    confirmation = client.get("/users/ana/delete")
    readable(confirmation, 200, "Delete your account and reviews?", "all your reviews", "recommendation model",
             "It cannot be undone.", "Cancel")
    assert re.search(r'<h1>[^<]+</h1>', confirmation.text) and 'href="/users/ana">Cancel</a>' in confirmation.text
    response = client.post("/users/ana/delete", data=hidden(confirmation, "/users/ana/delete"),
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/deleted"
    assert 'session=""; ' in cookies(response)["session"] and "Max-Age=0" in cookies(response)["session"]
    readable(client.get("/deleted"), 200, "Your account and reviews are being deleted", "Sign in · Sign up")
    assert [e for e in log.events if isinstance(e, SubjectForgotten)]
    project(log, store)
    for path in ("/users/ana", "/users/ana/history"):
        shown = readable(client.get(path), 404, "This user asked to be forgotten.")
        assert "Mine" not in shown and "Sorry" not in shown
    readable(client.get("/", params={"user": ["ben", "ana"]}), 404, "This user asked to be forgotten: ana.")


def test_an_outage_while_deleting_is_a_readable_503_and_keeps_the_session(site):
    client, log, store = site
    client.app.state.forgetting.keys.subjects(["ana"])
    signed_in(client, "ana")
    log.down = True
    confirmation = client.get("/users/ana/delete")
    response = client.post("/users/ana/delete", data=hidden(confirmation, "/users/ana/delete"))
    readable(response, 503, "could not finish deleting your account", "Signed in as ana")


def test_a_failure_inside_a_page_is_a_readable_500(site, monkeypatch):
    client = site[0]

    async def broken(api):
        raise RuntimeError("boom")

    signed_in(client, "ana")
    monkeypatch.setattr(pages, "input_limits", broken)
    shown = readable(client.get("/review"), 500, "Something went wrong on our side")
    assert "boom" not in shown


def test_static_files_are_cached_for_a_year_under_their_hashed_url(site):
    client = site[0]
    url = static_url("site.css")
    assert client.get(url).headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/static/site.css?v=old").headers["cache-control"] == "no-cache"
    assert client.get("/static/site.css", headers={"If-None-Match": client.get(url).headers["etag"]}).status_code == 304
    assert url in client.get("/").text


# -- you and a friend, a page per movie ----------------------------------------------------------

def movie_links(response) -> list[str]:
    """The movie ids the page links to, in order."""
    return re.findall(r'href="/movies/([^"?]+)"', response.text)


def test_signed_in_person_1_is_the_visitor_unless_the_address_names_people(site):
    client = site[0]
    assert 'id="user-1" name="user" value=""' in client.get("/").text
    signed_in(client, "ana")
    page = client.get("/")
    assert 'id="user-1" name="user" value="ana"' in page.text and 'id="user-2" name="user" value=""' in page.text
    assert 'list="known-users" data-users' in page.text and '<datalist id="known-users">' in page.text
    assert 'class="results"' not in page.text  # prefilled, not yet asked
    named = client.get("/", params={"user": ["bob", "cy"]})
    assert 'id="user-1" name="user" value="bob"' in named.text and 'value="ana"' not in named.text


def test_the_answer_shows_the_results_first_with_a_link_that_reproduces_the_search(site):
    client, log, store = site
    publish(store)
    query = [("user", "ana"), ("user", "ben"), ("strategy", "least_misery"), ("more", "")]
    page = client.get("/", params=query)
    readable(page, 200, "For ana, ben", "Change the search")
    assert page.text.index('class="results"') < page.text.index('<form method="get" action="/"')
    link = html.unescape(re.search(r'<a href="([^"]+)">Link to this search</a>', page.text).group(1))
    assert parse_qs(urlsplit(link).query) == parse_qs(urlsplit(str(page.url)).query)
    again = client.get(link)
    assert re.findall(r'<li class="card">.*?</li>', again.text, re.S) == \
        re.findall(r'<li class="card">.*?</li>', page.text, re.S)
    # a refusal comes first too, with its link
    refused = client.get("/", params={"user": ["ana", "zed"]})
    assert refused.text.index('role="alert"') < refused.text.index('<form method="get" action="/"')
    assert "Link to this search" in refused.text


def test_a_movie_page_shows_its_entry_histogram_and_reviews_newest_first_a_page_at_a_time(site):
    client, log, store = site
    ratings = [5, 4.5, 4.5, 4, 4, 4, 2, 2, 1, 5, 4, 4]  # 12 reviews: two pages of ten
    for n, rating in enumerate(ratings):
        client.post("/v1/reviews", headers=bearer(f"u{n:02}"), json={
            "user_id": f"u{n:02}", "movie_id": "h", "rating": rating, "summary": f"from u{n:02}",
            "reviewed_at": f"2024-01-{n + 1:02}T12:00:00Z"})
    project(log, store)
    page = client.get("/movies/h")
    readable(page, 200, "Heat (1995)", "Crime", "Mean rating 3.7 of 5 from 12 reviews", "Reviews, newest first",
             "No model has been trained yet")
    rows = re.findall(r'<th scope="row">.*?</span> ([\d.]+)</th>\s*<td>(\d+)</td>', page.text)
    assert rows == [("5", "2"), ("4.5", "2"), ("4", "5"), ("2", "2"), ("1", "1")]
    reviewers = re.findall(r'<a href="/users/(u\d+)">', page.text)
    assert reviewers == [f"u{n:02}" for n in range(11, 1, -1)]  # newest first, ten
    older = html.unescape(re.search(r'href="(/movies/h\?cursor=[^"]+)" rel="next"', page.text).group(1))
    second = client.get(older)
    readable(second, 200, "Older reviews", "from u01", "from u00", "Newest reviews")
    assert re.findall(r'<a href="/users/(u\d+)">', second.text) == ["u01", "u00"]
    assert 'rel="next"' not in second.text
    assert 'href="/review?movie_id=h"' in page.text
    readable(client.get("/movies/nothing-like-it"), 404, "We have no movie “nothing-like-it”")


def test_a_movie_page_shows_the_catalogues_poster_and_lets_its_origin_in_for_images_only(site):
    client, log, store = site
    for movie, url in (("p", "https://img.example.org/posters/p.jpg"), ("q", "javascript:alert(1)"),
                       ("r", "https://bad;script-src *.example/x.jpg")):
        asyncio.run(log.append(MovieCatalogued(event_id=f"poster-{movie}", occurred_at=T0, recorded_at=T0,
                                               movie_id=movie, title=f"Poster {movie}", image_url=url)))
    project(log, store)
    page = client.get("/movies/p")
    assert '<img class="poster" src="https://img.example.org/posters/p.jpg" alt="Poster of Poster p"' in page.text
    policy = page.headers["content-security-policy"]
    assert "img-src 'self' data: https://img.example.org;" in policy and "default-src 'self';" in policy
    for movie in ("q", "r"):
        page = client.get(f"/movies/{movie}")
        readable(page, 200, f"Poster {movie}", "No reviews yet")
        assert "<img" not in page.text and page.headers["content-security-policy"] == \
            client.get("/").headers["content-security-policy"]


def test_more_like_this_links_the_models_nearest_movies_or_says_why_there_are_none(site):
    client, log, store = site
    catalogue(log, store, {m: (f"Model movie {m}", 2000, ("Drama",)) for m in MODEL_MOVIES})
    publish(store)  # knows m0..m29, not the site's own movies
    page = client.get("/movies/m0")
    readable(page, 200, "Model movie m0", "More like this", "most alike first")
    similar = re.search(r'<ul class="similar">.*?</ul>', page.text, re.S).group(0)
    nearest = re.findall(r'href="/movies/([^"]+)">Model movie', similar)
    assert len(nearest) == 8 and "m0" not in nearest and set(nearest) <= set(MODEL_MOVIES)
    readable(client.get("/movies/h"), 200, "Heat", "The current model does not know this movie yet")


def test_every_movie_title_on_the_site_links_to_its_page(site):
    client, log, store = site
    catalogue(log, store, {m: (f"Model movie {m}", 2000, ("Drama",)) for m in MODEL_MOVIES})
    publish(store)
    for user in ("ana", "ben"):
        client.post("/v1/reviews", headers=bearer(user), json={"user_id": user, "movie_id": "m1", "rating": 5})
    project(log, store)
    match = client.get("/", params={"user": ["ana", "ben"]})
    cards = re.findall(r'<li class="card">\s*<h3><a href="/movies/([^"]+)">Model movie', match.text)
    assert len(cards) == 10
    assert re.search(r'because they liked <a href="/movies/m1">Model movie m1</a>', match.text)
    assert movie_links(client.get("/users/ana")) == ["m1"]
    history = client.get("/users/ana/history", params={"on": "2100-01-01"})
    assert movie_links(history) == ["m1", "m1"]  # the review as it stood, and the change
    signed_in(client, "cy")
    assert "m1" in movie_links(client.get("/review", params={"q": "model movie m1"}))
    client.get("/movies/m1").raise_for_status()
