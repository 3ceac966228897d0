"""The website's flows and its accounts end to end, in real headless Chromium (Debian's, driven by Playwright),
against the session's site (tests/integration/site.py): the real stack, the projection worker, the
archiver, the API serving the site, and a model trained by `harmony train` on a small MovieLens-format
import.

Each step keeps a screenshot in `artefacts/screenshots/` (HARMONY_ARTEFACTS to put them elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote, urljoin

import pytest

from tests.conftest import free_port
from tests.integration.site import HISTORY_USER, PASSWORD, REVIEWER, TITLES, start_api

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("HARMONY_ARTEFACTS", PROJECT / "artefacts")) / "screenshots"


@pytest.fixture(scope="module")
def browser(site):  # after the site: Playwright's sync API keeps an event loop running in this thread
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("HARMONY_CHROMIUM") or shutil.which("chromium")
    assert executable, "Chromium is missing: `make test` installs Debian's chromium (scripts/setup.sh --test)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@contextlib.contextmanager
def browsing(browser, site, **options):
    """A page in a fresh browser context on the site; no JavaScript error may happen in it."""
    context = browser.new_context(base_url=site["url"], viewport={"width": 1100, "height": 900}, **options)
    page = context.new_page()
    failures = []
    page.on("pageerror", lambda error: failures.append(str(error)))
    yield page
    context.close()
    assert not failures, f"JavaScript errors: {failures}"


@pytest.fixture
def page(browser, site):
    with browsing(browser, site) as page:
        yield page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page, user: str, then: str = "/review") -> None:
    """Sign in through the sign-in page, as a person does, and come back to `then`."""
    page.goto(f"/signin?next={quote(then, safe='')}")
    fill_sign_in(page, user, PASSWORD)
    page.wait_for_url(f"**{then}")


def fill_sign_in(page, user: str, password: str) -> None:
    page.get_by_label("User id").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_movie_search_for_two_users_shows_titled_movies_with_each_ones_prediction(page):
    page.goto("/")
    shot(page, "01-movie-search-form")
    page.get_by_label("Person 1").fill("1")
    page.get_by_label("Person 2").fill("2")
    page.get_by_label(re.compile("^least misery")).check()
    page.get_by_role("button", name="Find movies").click()
    page.wait_for_url(re.compile(r"user=1&user=2"))
    cards = page.locator(".cards .card")
    assert cards.count() >= 5
    titles = [t.strip() for t in cards.locator("h3").all_inner_texts()]
    assert set(titles) <= {title for title, _ in TITLES}, titles  # "Title (year)", as catalogued
    first = cards.first
    assert first.locator("dt").all_inner_texts() == ["1", "2"]
    predictions = [float(p.split()[0]) for p in first.locator(".predicted").all_inner_texts()]
    assert len(predictions) == 2 and all(0.5 <= p <= 5 for p in predictions)
    assert "strategy least misery" in page.locator(".results").inner_text()
    shot(page, "02-movie-search-results")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "03-movie-search-phone")


def test_movie_search_works_from_the_keyboard_alone_with_focus_always_visible(page):
    page.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")  # to the main content: the next Tab reaches the form
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "user-1"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.type("1")
    page.keyboard.press("Tab")
    page.keyboard.type("2")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"user=1&user=2"))
    assert page.locator(".cards .card").count() >= 5


def test_signed_in_you_pick_a_friend_by_typing_then_follow_a_pick_to_its_movie_page(page):
    sign_in(page, REVIEWER, "/")
    assert page.get_by_label("Person 1").input_value() == REVIEWER  # you, unless you change it
    friend = page.get_by_label("Person 2")
    friend.press_sequentially("DIAR", delay=60)  # case does not matter
    offered = page.locator("#known-users option")
    offered.first.wait_for(state="attached")
    assert offered.evaluate_all("options => options.map(o => o.value)") == [HISTORY_USER]
    # Chromium draws a datalist's popup outside the page, where no script reaches: pick the
    # suggestion as choosing it does, by putting its value in the field.
    friend.fill(offered.first.get_attribute("value"))
    shot(page, "20-friend-suggested")
    page.get_by_role("button", name="Find movies").click()
    page.wait_for_url(re.compile(rf"user={REVIEWER}&user={HISTORY_USER}"))
    cards = page.locator(".cards .card")
    assert cards.count() >= 5
    assert cards.first.evaluate("card => card.getBoundingClientRect().top < window.innerHeight")  # no scrolling
    assert urljoin(page.url, page.locator(".share a").get_attribute("href")) == page.url  # it reproduces the search
    shot(page, "21-friend-results")
    title = cards.first.locator("h3 a")
    name = title.inner_text()
    title.click()
    page.wait_for_url(re.compile(r"/movies/[^/?]+$"))
    assert page.get_by_role("heading", level=1).inner_text().startswith(name)
    histogram = page.get_by_role("table", name="How many reviews give each rating")
    counts = [int(c) for c in histogram.locator("tbody td:nth-child(2)").all_inner_texts()]
    summary = page.locator(".summary").inner_text()
    assert counts and f"from {sum(counts)} review" in summary
    reviews = page.locator(".movie-reviews li")
    assert reviews.count() == min(10, sum(counts))
    days = [t.get_attribute("datetime") for t in reviews.locator("time").all()]
    assert days == sorted(days, reverse=True)  # newest first
    similar = page.locator(".similar li a")
    assert similar.count() >= 3
    shot(page, "22-movie-page")
    if sum(counts) > 10:
        page.get_by_role("link", name="Older reviews").click()
        assert page.locator(".movie-reviews li").count() == min(10, sum(counts) - 10)
    nearest = similar.first.get_attribute("href")
    reviewer = page.locator(".movie-reviews li").first.get_by_role("link")
    who = reviewer.inner_text()
    reviewer.click()  # each review leads to its reviewer's page
    page.wait_for_url(f"**/users/{quote(who, safe='')}")
    page.goto(nearest)  # more like this: another movie's page, with its own
    assert page.locator(".similar li a").count() >= 3


def test_movie_search_explains_an_unknown_user(page):
    page.goto("/?user=1&user=nobody-at-all")
    alert = page.get_by_role("alert")
    assert "nobody-at-all" in alert.inner_text() and "write their first review" in alert.inner_text()
    shot(page, "04-movie-search-unknown-user")


def test_query_user_pages_through_reviews_then_sees_the_history_as_of_an_earlier_day(page):
    page.goto("/users")
    page.get_by_label("User id").fill(HISTORY_USER)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/users/{HISTORY_USER}")
    rows = page.locator("table.reviews tbody tr")
    assert rows.count() == 10
    assert rows.first.locator("th").inner_text() == "Toy Story (1995)"  # the newest: day 24
    first_page = rows.locator("th").all_inner_texts()
    shot(page, "05-user-reviews")
    page.get_by_role("link", name="Older reviews").click()
    older = page.locator("table.reviews tbody tr th").all_inner_texts()
    assert older and not set(older) & set(first_page)  # 14 current reviews: 10, then 4
    assert len(first_page) + len(older) == 14
    shot(page, "06-user-reviews-older")
    page.get_by_role("link", name="History of changes").click()
    events = page.locator("ol.events li")
    assert events.count() == 20 and re.search(r"Retracted the review of\s+Star Wars", events.first.inner_text())
    assert page.get_by_text("Changed the review of").count() >= 1
    page.get_by_label("As they stood at the end of").fill("2024-03-05")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile("on=2024-03-05"))
    stood = page.locator("ul.stood li")
    assert stood.count() == 5  # five days of reviews, five different movies
    assert "day 5" in page.locator("ol.events").inner_text() and "day 6" not in page.locator("ol.events").inner_text()
    shot(page, "07-user-history-as-of")


def test_an_imported_users_history_stands_by_the_dates_the_reviews_were_written(page):
    page.goto("/users/1/history")  # MovieLens ratings of November 1997, imported today
    page.get_by_label("As they stood at the end of").fill("1997-12-31")
    page.get_by_role("button", name="Show").click()  # "as written", the default
    page.wait_for_url(re.compile("on=1997-12-31"))
    assert page.locator("ul.stood li").count() > 0 and "1997" in page.locator("ol.events time").first.inner_text()
    page.get_by_label("as recorded by the log").check()
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile("clock=recorded"))
    assert page.locator("ul.stood li").count() == 0
    assert "the log had recorded no reviews" in page.locator("section[aria-labelledby=stood]").inner_text()


def test_sign_up_signs_the_new_user_in_and_sign_out_signs_them_out(page):
    user = f"new-{uuid.uuid4().hex[:6]}"
    page.goto("/users")
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("User id").fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD[::-1])
    page.get_by_role("button", name="Sign up").click()
    assert "The two passwords differ" in page.locator("#password_again-error").inner_text()
    assert page.get_by_label("Password again").get_attribute("aria-invalid") == "true"
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    shot(page, "08-sign-up")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/users")  # back where the visitor came from
    account = page.get_by_role("navigation", name="Account")
    assert re.sub(r"\s+", " ", account.inner_text()).strip() == f"Signed in as {user} · Sign out"
    account.get_by_role("link", name=user).click()
    page.wait_for_url(f"**/users/{user}")
    assert f"{user} has no current reviews" in page.inner_text("main")
    shot(page, "09-signed-up")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/$"))
    assert "Sign in" in page.get_by_role("navigation", name="Account").inner_text()
    page.goto("/review")
    page.wait_for_url(re.compile(r"/signin\?next=%2Freview"))


def test_enter_review_finds_a_movie_by_typing_submits_sees_it_listed_then_retracts_it(page):
    user = "web-writer"
    page.goto("/review")  # not signed in: to the sign-in page, and back
    page.wait_for_url(re.compile(r"/signin\?next=%2Freview"))
    assert "Sign in to write" in page.get_by_role("status").inner_text()
    shot(page, "10-sign-in")
    fill_sign_in(page, user, "not the password")
    assert "Wrong user id or password." in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Password").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("User id").input_value() == user
    shot(page, "11-sign-in-wrong-password")
    fill_sign_in(page, user, PASSWORD)
    page.wait_for_url("**/review")
    page.get_by_label("Find it by title").press_sequentially("amel", delay=40)
    suggestion = page.get_by_label("Amélie (2001)")
    suggestion.wait_for()
    suggestion.check()
    page.get_by_role("radio", name="4.5 of 5", exact=True).check()
    page.get_by_label(re.compile("^Summary")).fill("Paris, lovingly")
    assert page.locator("#summary-count").inner_text() == "15 of 300 characters"
    shot(page, "12-enter-review-form")
    page.get_by_role("button", name="Save review").click()
    page.wait_for_url(f"**/users/{user}?after=*")
    assert "Your review was saved." in page.get_by_role("status").inner_text()
    row = page.locator("table.reviews tbody tr")
    assert row.count() == 1 and "Amélie" in row.inner_text() and "Paris, lovingly" in row.inner_text()
    assert row.locator(".stars").inner_text() == "★★★★½"
    shot(page, "13-enter-review-listed")
    page.get_by_role("button", name="Retract the review of Amélie").click()
    page.wait_for_url(re.compile("done=retracted"))
    assert "Your review was retracted." in page.get_by_role("status").inner_text()
    assert page.locator("table.reviews").count() == 0 and f"{user} has no current reviews" in page.inner_text("main")
    shot(page, "14-enter-review-retracted")


def test_a_user_deletes_their_account_and_reviews_and_is_forgotten(page):
    user = f"leaver-{uuid.uuid4().hex[:6]}"
    page.goto("/signup?next=%2Freview%3Fq%3Dheat")
    page.get_by_label("User id").fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/review?q=heat")
    page.get_by_role("radio", name="2 of 5", exact=True).check()  # Heat, the only match, is chosen
    page.get_by_role("button", name="Save review").click()
    page.wait_for_url(f"**/users/{user}?after=*")
    assert "Heat" in page.locator("table.reviews").inner_text()
    page.get_by_role("link", name="Delete my account and reviews").click()
    page.wait_for_url(f"**/users/{user}/delete")
    assert "It cannot be undone." in page.inner_text("main")
    shot(page, "18-delete-account-confirmation")
    page.get_by_role("button", name="Delete my account and reviews").click()
    page.wait_for_url("**/deleted")
    assert "Your account and reviews are being deleted" in page.get_by_role("status").inner_text()
    assert "Sign in" in page.get_by_role("navigation", name="Account").inner_text()
    response = page.goto(f"/users/{user}")
    assert response.status == 404 and "This user asked to be forgotten." in page.inner_text("main")
    shot(page, "19-forgotten-user")


def test_enter_review_works_without_javascript(browser, site):
    context = browser.new_context(base_url=site["url"], java_script_enabled=False)
    page = context.new_page()
    user = "nojs-writer"
    sign_in(page, user)
    page.get_by_label("Find it by title").fill("cinema para")
    page.get_by_role("button", name="Find", exact=True).click()
    assert page.get_by_label("Cinéma Paradiso (1988)").is_checked()  # the only match
    page.get_by_role("radio", name="3 of 5", exact=True).check()
    page.get_by_role("button", name="Save review").click()
    page.wait_for_url(f"**/users/{user}?after=*")
    assert "Cinéma Paradiso" in page.locator("table.reviews").inner_text()
    page.goto(f"/users/{HISTORY_USER}")  # someone else's reviews: nothing to retract
    assert page.locator("table.reviews tbody tr").count() == 10
    assert page.get_by_role("button", name=re.compile("^Retract")).count() == 0
    context.close()


def test_a_validation_error_shows_next_to_its_field(page):
    sign_in(page, "careful-writer", "/review?q=heat")
    page.get_by_role("button", name="Save review").click()  # Heat is chosen, no rating
    error = page.locator("#rating-error")
    assert "rating" in error.inner_text()
    assert page.get_by_label("Heat (1995)").is_checked()
    shot(page, "15-enter-review-validation-error")


def test_unknown_user_and_broker_down_are_readable_pages(page, site):
    response = page.goto("/users/nobody-at-all")
    assert response.status == 404
    assert "We have no reviews by “nobody-at-all”" in page.get_by_role("alert").inner_text()
    shot(page, "16-unknown-user")
    # the same product with its broker unreachable: nothing listens on that port. The session
    # from the first API holds there too (a cookie is the host's, whatever the port; one token key).
    sign_in(page, "outage-writer")
    env = {**site["env"], "HARMONY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    api, url = start_api(env, site["folder"] / "api-without-broker.log")
    try:
        page.goto(f"{url}/review?q=fargo")
        page.get_by_role("radio", name="4 of 5", exact=True).check()
        page.get_by_role("button", name="Save review").click()
        alert = page.get_by_role("alert")
        assert "could not save your review just now" in alert.inner_text()
        assert "Traceback" not in page.content()
        assert page.get_by_label("Fargo (1996)").is_checked()  # the form is kept for another try
        shot(page, "17-enter-review-broker-down")
    finally:
        api.stop()
