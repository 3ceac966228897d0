"""The website's pages over the real API app, an in-memory log and a real SQLite store (the browser
flows against the real stack are in tests/integration/test_site_browser.py)."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from commands.handlers import ReviewCommands
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import MemoryLog, bearer, memory_auth
from tests.unit.test_api import project
from tests.unit.test_match import catalogue, publish
from web import pages
from web.static import static_url

MOVIES = {"sw": ("Star Wars", 1977, ("Action", "Sci-Fi")), "am": ("Amélie", 2001, ("Comedy",)),
          "h": ("Heat", 1995, ("Crime",))}


@pytest.fixture
def site(tmp_path):
    log = MemoryLog()
    store = SQLiteStore(tmp_path / "p.db")
    catalogue(log, store, MOVIES)
    app = create_app(store, log, ReviewCommands(log), memory_auth(log), site=pages.routes(), not_found=pages.not_found)
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


def submit(client, **form):
    return client.post("/review", data={"key": form.pop("key", None) or "k-" + "-".join(map(str, form.values())),
                                        **form}, follow_redirects=False)


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


def test_writing_a_review_shows_it_in_the_users_list_then_retracting_removes_it(site):
    client, log, store = site
    response = submit(client, user_id="ana", movie_id="am", rating="4.5", summary="Lovely", text="So Parisian.")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/users/ana?after=")
    project(log, store)
    shown = readable(client.get(response.headers["location"]), 200, "Your review was saved.", "Amélie (2001)",
                     "★★★★½", "Lovely")
    retract = re.search(r'action="(/users/ana/reviews/am/retract)".*?name="key" value="([^"]+)"',
                        client.get("/users/ana").text, re.S)
    response = client.post(retract.group(1), data={"key": retract.group(2)}, follow_redirects=False)
    assert response.status_code == 303
    project(log, store)
    shown = readable(client.get(response.headers["location"]), 200, "Your review was retracted.")
    assert "Amélie" not in shown and "ana has no current reviews" in shown
    assert store.user_ratings("ana") == {}


def test_validation_errors_show_next_to_their_fields_and_keep_what_was_typed(site):
    client = site[0]
    response = submit(client, user_id="ana", movie_id="am", summary="Kept")
    readable(response, 422, "Please correct what is marked below", "rating is required")
    assert re.search(r'<span class="error" id="rating-error">', response.text)
    assert 'value="Kept"' in response.text and 'value="am" checked' in response.text
    response = submit(client, user_id="", movie_id="am", rating="3")
    assert 'id="user_id-error"' in response.text and 'aria-invalid="true"' in response.text


def test_a_broker_outage_on_submit_is_a_readable_503_with_the_form_kept(site):
    client, log, _ = site
    log.down = True
    response = submit(client, user_id="ana", movie_id="h", rating="2", summary="Long")
    readable(response, 503, "could not save your review just now", "Nothing was saved")
    assert 'value="Long"' in response.text and 'name="key" value="k-ana-h-2-Long"' in response.text


def test_the_finder_lists_matching_movies_to_choose_from_without_javascript(site):
    client = site[0]
    response = client.get("/review", params={"q": "AMEL", "user_id": "ana"})
    readable(response, 200, "Amélie (2001)")
    assert 'name="movie_id" value="am" checked' in response.text  # the only match is chosen
    readable(client.get("/review", params={"q": "zzz"}), 200, "No movie matches “zzz”")
    readable(client.get("/review", params={"q": "x" * 101}), 200, "1 to 100 characters")


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


def test_unknown_users_and_bad_dates_are_readable_pages(site):
    client = site[0]
    readable(client.get("/users/nobody"), 404, "We have no reviews by “nobody”")
    readable(client.get("/users/nobody/history"), 404, "never reviewed anything")
    client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": "h", "rating": 2})
    readable(client.get("/users/ana/history", params={"on": "yesterday"}), 400, "is not a date")


def test_a_failure_inside_a_page_is_a_readable_500(site, monkeypatch):
    client = site[0]

    async def broken(api):
        raise RuntimeError("boom")

    monkeypatch.setattr(pages, "review_limits", broken)
    shown = readable(client.get("/review"), 500, "Something went wrong on our side")
    assert "boom" not in shown


def test_static_files_are_cached_for_a_year_under_their_hashed_url(site):
    client = site[0]
    url = static_url("site.css")
    assert client.get(url).headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/static/site.css?v=old").headers["cache-control"] == "no-cache"
    assert client.get("/static/site.css", headers={"If-None-Match": client.get(url).headers["etag"]}).status_code == 304
    assert url in client.get("/").text
