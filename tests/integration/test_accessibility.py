"""Every page of the website checked as a visitor's assistive technology meets it: axe-core (from npm,
installed by `scripts/setup.sh --test` into `.node/`) runs inside each page in headless Chromium, and no
violation of "serious" or "critical" impact may remain. Signed out and signed in, with the states a
visitor reaches: results, errors beside fields, notices, the 404 pages, a forgotten user's page.

The site is the session's (tests/integration/site.py: the stack with a MovieLens-format import, a diary
of reviews and a trained model), shared with test_site_browser, whose browser fixture this module uses.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.site import HISTORY_USER, PASSWORD
from tests.integration.test_site_browser import browser, browsing  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
AXE = PROJECT / ".node" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")

# axe's own run, answering the serious and critical violations in a form a report can list.
RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.filter(v => ['serious', 'critical'].includes(v.impact)).map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary})),
  }));
}"""


@pytest.fixture
def visitor(browser, site):  # noqa: F811
    """A page in a fresh browser context. Its CSP is bypassed only so that axe's script can be injected."""
    assert AXE.is_file(), f"axe-core is missing at {AXE}: `make test` installs it (scripts/setup.sh --test)"
    with browsing(browser, site, bypass_csp=True) as page:
        yield page


def violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    return page.evaluate(RUN_AXE)


def readable(found: dict[str, list[dict]]) -> str:
    """Each page's violations: rule id, impact, what it asks, and the elements that break it."""
    lines = []
    for where, problems in found.items():
        for v in problems:
            lines.append(f"{where}: {v['id']} ({v['impact']}): {v['help']}")
            for node in v["nodes"][:5]:
                summary = " ".join(node["summary"].split())
                lines.append(f"    {node['target']}  — {summary[:300]}")
            if len(v["nodes"]) > 5:
                lines.append(f"    … and {len(v['nodes']) - 5} more")
    return "\n".join(lines)


def check(page, where: str, found: dict[str, list[dict]]) -> None:
    problems = violations(page)
    if problems:
        found[where] = problems


SIGNED_OUT = [
    ("/", 200),
    ("/?user=1&user=2", 200),  # the cards
    ("/?user=1&user=nobody-at-all", 404),  # an unknown user's message
    ("/movies/1", 200),  # a movie's page: histogram, reviews, more like this
    ("/movies/no-such-movie", 404),
    ("/users", 200),
    (f"/users/{HISTORY_USER}", 200),
    (f"/users/{HISTORY_USER}/history", 200),
    (f"/users/{HISTORY_USER}/history?on=2024-03-05", 200),
    ("/users/nobody-at-all", 404),
    ("/review", 200),  # sent to sign in, with a notice
    (f"/users/{HISTORY_USER}/delete", 200),  # sent to sign in first
    ("/signin", 200),
    ("/signup", 200),
    ("/no-such-page", 404),
]


@pytest.mark.parametrize("path, status", SIGNED_OUT, ids=[p for p, _ in SIGNED_OUT])
def test_every_page_signed_out_has_no_serious_accessibility_violation(visitor, path, status):
    response = visitor.goto(path)
    assert response.status == status, f"{path}: {response.status}"
    found = {}
    check(visitor, path, found)
    assert not found, "axe found serious or critical violations:\n" + readable(found)


def test_forms_with_errors_signed_out_have_no_serious_accessibility_violation(visitor):
    found = {}
    visitor.goto("/signin")
    visitor.get_by_label("User id").fill(f"a11y-{uuid.uuid4().hex[:6]}")  # no one's: the site is shared
    visitor.get_by_label("Password").fill("not the password")
    visitor.get_by_role("button", name="Sign in").click()
    visitor.get_by_role("alert").first.wait_for()
    check(visitor, "/signin, a wrong password", found)
    visitor.goto("/signup")
    visitor.get_by_label("User id").fill(f"a11y-{uuid.uuid4().hex[:6]}")
    visitor.get_by_label("Password", exact=True).fill(PASSWORD)
    visitor.get_by_label("Password again").fill(PASSWORD[::-1])
    visitor.get_by_role("button", name="Sign up").click()
    visitor.locator("#password_again-error").wait_for()
    check(visitor, "/signup, passwords that differ", found)
    assert not found, "axe found serious or critical violations:\n" + readable(found)


def test_every_page_signed_in_has_no_serious_accessibility_violation(visitor):
    """A new user's walk: sign up, a review with an error then saved, their pages, deleting the account."""
    found = {}
    user = f"a11y-{uuid.uuid4().hex[:6]}"
    visitor.goto(f"/signup?next={quote('/review?q=heat', safe='')}")
    visitor.get_by_label("User id").fill(user)
    visitor.get_by_label("Password", exact=True).fill(PASSWORD)
    visitor.get_by_label("Password again").fill(PASSWORD)
    visitor.get_by_role("button", name="Sign up").click()
    visitor.wait_for_url("**/review?q=heat")
    check(visitor, "/review?q=heat", found)
    visitor.get_by_role("button", name="Save review").click()  # Heat is chosen, no rating
    visitor.locator("#rating-error").wait_for()
    check(visitor, "/review, a missing rating", found)
    visitor.get_by_role("radio", name="4 of 5", exact=True).check()
    visitor.get_by_label("Summary").fill("Tense")
    visitor.get_by_role("button", name="Save review").click()
    visitor.wait_for_url(f"**/users/{user}?after=*")
    check(visitor, f"/users/{user} after saving", found)
    visitor.goto("/review")
    visitor.get_by_label("Find it by title").press_sequentially("amel", delay=40)
    visitor.get_by_label("Amélie (2001)").wait_for()
    check(visitor, "/review with suggestions", found)
    visitor.goto("/")  # you are Person 1; user ids suggested for Person 2
    visitor.get_by_label("Person 2").press_sequentially("dia", delay=40)
    visitor.locator("#known-users option").first.wait_for(state="attached")
    check(visitor, "/ with user id suggestions", found)
    for path in ("/", "/?user=1&user=2", f"/?user=1&user={HISTORY_USER}", "/movies/1", f"/users/{HISTORY_USER}", f"/users/{user}/history",
                 f"/users/{user}/history?on=2024-03-05", "/users", f"/users/{HISTORY_USER}/delete", "/no-such-page"):
        visitor.goto(path)
        check(visitor, f"{path} (signed in)", found)
    visitor.goto(f"/users/{user}/delete")
    check(visitor, f"/users/{user}/delete", found)
    visitor.get_by_role("button", name="Delete my account and reviews").click()
    visitor.wait_for_url("**/deleted")
    check(visitor, "/deleted", found)
    response = visitor.goto(f"/users/{user}")
    assert response.status == 404
    check(visitor, f"/users/{user} (forgotten)", found)
    assert not found, "axe found serious or critical violations:\n" + readable(found)
