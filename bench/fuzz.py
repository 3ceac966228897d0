"""Fuzzing the API from its own OpenAPI document (issue 13), with Schemathesis.

    .venv/bin/python -m bench.fuzz [--cases 10000] [--seed 0] [--base-url URL] [--json]

Two runs, reproducible from --seed: stateful first (a quarter of the cases: members' visits along the
document's links: open an account, sign in, submit and retract reviews, read them back page by page, which
must show exactly what was written), then stateless (each operation alone, valid and invalid inputs, writes
signed as their own user, another, none or made up). Every answer must be no 5xx, a documented status,
content type, body and headers, and a 4xx a problem+json whose `status` is the HTTP status. Without
--base-url it starts a local stack, a worker and an API and seeds a catalogue, reviews and a model; exits 1
on any failure. tests/integration/test_fuzz.py runs the same with about 2,000 cases.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import quote, unquote

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance,
)

from bench.common import (
    Child, MemoryBucket, authorization, base_parser, child_env, console, fresh_topic, free_port, local_stack,
    produce_batched, run_benchmark, sqlite_store,
)

PROBLEM = "application/problem+json"
STATEFUL_SHARE = 0.25
STEPS = 20  # rules a visit runs at most (a read-back that pages makes more requests)
# Each valid case of these hashes a password (argon2id, ~0.25 s of a core): a smaller share of the cases.
SLOW = {"POST /v1/accounts": 0.25, "POST /v1/tokens": 0.5}
# How a stateless write is signed: mostly as its own user, so it gets past the 401 and 403.
# Accounts the fuzzer's own API lets one address open an hour: every visit opens one.
OPENINGS_PER_HOUR = "1000000"
CREDENTIALS = ("own",) * 5 + ("none", "another user's", "made up")

# The seeded world: a catalogue, users who reviewed some of it, and a model of both.
MOVIES = [("fz-m01", "Amélie", 2001, ("Comedy", "Romance")), ("fz-m02", "The Matrix", 1999, ("Action", "Sci-Fi")),
          ("fz-m03", "Spirited Away", 2001, ("Animation", "Fantasy")), ("fz-m04", "Heat", 1995, ("Crime",)),
          ("fz-m05", "Alien", 1979, ("Horror", "Sci-Fi")), ("fz-m06", "Toy Story", 1995, ("Animation", "Comedy")),
          ("fz-m07", "Casablanca", 1942, ("Drama", "Romance")), ("fz-m08", "Léon", 1994, ("Crime", "Drama")),
          ("fz-m09", "Up", 2009, ("Animation",)), ("fz-m10", "Arrival", 2016, ("Drama", "Sci-Fi"))]
USERS = ("fz-ana", "fz-ben", "fz-cleo", "fz-dev")
WORDS = ("amélie", "matrix", "the", "away", "toy story", "léon", "up", "ali")


def problem_details(ctx, response, case) -> None:
    """A 4xx is a problem (RFC 9457) about this answer: its media type, and `status` the HTTP status."""
    if not 400 <= response.status_code < 500:
        return
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if media_type != PROBLEM:
        raise AssertionError(f"a {response.status_code} answered {media_type or 'no content type'}, not {PROBLEM}")
    try:
        status = response.json().get("status")
    except (ValueError, AttributeError):
        raise AssertionError(f"a {response.status_code} problem is not a JSON object") from None
    if status != response.status_code:
        raise AssertionError(f"a {response.status_code} problem says status {status!r}")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, problem_details]


@dataclass
class Tally:
    """The answers per operation and status, and the failures (one example of each kind)."""

    answers: Counter = field(default_factory=Counter)  # (operation, status) -> requests
    failures: dict = field(default_factory=dict)  # (operation, failure, status) -> {"count", "example"}

    @property
    def cases(self) -> int:
        return sum(self.answers.values())

    def check(self, case, response) -> None:
        self.answers[case.operation.label, response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                self.failed(case.operation.label, failure.title, response.status_code,
                            f"{failure.message}\n{case.as_curl_command(headers=dict(response.request.headers))}")

    def failed(self, operation: str, what: str, status: int | None, example: str) -> None:
        entry = self.failures.setdefault((operation, what, status), {"count": 0, "example": example})
        entry["count"] += 1

    def figures(self) -> dict:
        answers: dict[str, dict[str, int]] = {}
        for (operation, status), count in sorted(self.answers.items()):
            answers.setdefault(operation, {})[str(status)] = count
        return {"cases": self.cases, "answers": answers,
                "failures": [{"operation": operation, "failure": what, "status": status, **entry}
                             for (operation, what, status), entry in self.failures.items()]}


def load(base_url: str):
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", wait_for_schema=30)


def fuzz(base_url: str, cases: int, sign: Callable[[str], str], random_seed: int = 0) -> Tally:
    """Both runs against the API at `base_url`, `cases` requests in all; `sign(user_id)` is an
    Authorization value that lets a request write as that user."""
    schema, tally = load(base_url), Tally()
    with requests.Session() as session:
        stateful(schema, base_url, session, round(cases * STATEFUL_SHARE), random_seed, tally)
        stateless(schema, base_url, session, cases - tally.cases, sign, random_seed, tally)
    return tally


# -- stateless --------------------------------------------------------------------------------


def stateless(schema, base_url: str, session, cases: int, sign, random_seed: int, tally: Tally) -> None:
    """About `cases` requests, shared among the operations, half of each share invalid."""
    # Forgetting a user cannot be undone: fuzzed last, so the seeded users it may forget are still
    # there for every other operation.
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda op: op.label == "DELETE /v1/users/{user_id}")
    fixed = [op for op in operations if not has_inputs(op)]  # one request says all there is to say
    weights = {op.label: SLOW.get(op.label, 1.0) for op in operations if has_inputs(op)}
    per_weight = (cases - len(fixed)) / sum(weights.values())
    for operation in operations:
        share = max(1, round(weights.get(operation.label, 0) * per_weight))
        invalid = share // 2 if negatable(operation) else 0
        for mode, count in ((GenerationMode.POSITIVE, share - invalid), (GenerationMode.NEGATIVE, invalid)):
            if count:
                fuzz_operation(operation, mode, count, base_url, session, sign, random_seed, tally)


def has_inputs(operation) -> bool:
    return bool(list(operation.iter_parameters())) or bool(list(operation.body))


def negatable(operation) -> bool:
    """Whether Schemathesis can send an invalid request: not when the inputs are path parameters
    only, whose invalid values it cannot put in a path (it searches long, and gives up)."""
    return any(p.location.value != "path" for p in operation.iter_parameters()) or bool(list(operation.body))


def fuzz_operation(operation, mode, count: int, base_url: str, session, sign, random_seed: int, tally: Tally) -> None:
    cases = operation.as_strategy(generation_mode=mode)

    @seed(random_seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def send(data):
        case = data.draw(cases)
        if mode is GenerationMode.POSITIVE and data.draw(st.booleans()):
            seeded(case, data)
        if signed_in(operation):
            signed(case, data.draw(st.sampled_from(CREDENTIALS)), sign)
        tally.check(case, case.call(base_url=base_url, session=session))

    try:
        send()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:  # nothing to make invalid is fine; nothing valid is not
            tally.failed(operation.label, "no valid request could be generated from the document", None, "")


def seeded(case, data) -> None:
    """Name what exists, where the operation names users or movies: reads that find something."""
    users = data.draw(st.lists(st.sampled_from(USERS), min_size=2, max_size=3, unique=True))
    movies = data.draw(st.lists(st.sampled_from([m[0] for m in MOVIES]), min_size=1, max_size=4, unique=True))
    values = {"user_id": users[0], "movie_id": movies[0], "users": ",".join(users), "ids": ",".join(movies),
              "q": data.draw(st.sampled_from(WORDS))}
    for container in (case.path_parameters, case.query):
        for name in set(container or {}) & set(values):
            container[name] = values[name]


def signed_in(operation) -> bool:
    return bool(operation.definition.raw.get("security"))


def signed(case, credential: str, sign) -> None:
    headers = {name: value for name, value in (case.headers or {}).items() if name.lower() != "authorization"}
    user = user_of(case)
    if credential == "own" and user is not None:
        headers["Authorization"] = sign(user)
    elif credential == "another user's":
        headers["Authorization"] = sign("fz-someone-else")
    elif credential == "made up" and case.headers and "Authorization" in case.headers:
        headers["Authorization"] = case.headers["Authorization"]
    case.headers = headers


def user_of(case) -> str | None:
    """The user a write is for: its body's, or its path's."""
    if isinstance(case.body, dict) and isinstance(case.body.get("user_id"), str):
        return case.body["user_id"]
    user = (case.path_parameters or {}).get("user_id")
    return unquote(user) if isinstance(user, str) else None


# -- stateful ---------------------------------------------------------------------------------


def stateful(schema, base_url: str, session, steps: int, random_seed: int, tally: Tally) -> None:
    """Members' visits, until about `steps` requests have been made: open an account, sign in, submit
    and retract reviews with the token POST /v1/tokens gave, and read them back after the last write
    (`after=` its token, page by page), which must show exactly what was written; and the history."""
    operations = {op.definition.raw["operationId"]: op for op in (r.ok() for r in schema.get_all_operations())}
    accounts, reviews = (operations[name].as_strategy() for name in ("open_account", "submit_review"))

    def send(case, *expected: int):
        response = case.call(base_url=base_url, session=session)
        tally.check(case, response)
        if response.status_code not in expected:
            tally.failed(case.operation.label, f"answered {response.status_code} in a visit, not {expected}",
                         response.status_code, case.as_curl_command(headers=dict(response.request.headers)))
        return response

    def call(operation_id: str, user: str, token: str | None = None, movie: str | None = None, **query):
        path = {"user_id": quote(user, safe="")} | ({"movie_id": quote(movie, safe="")} if movie else {})
        return operations[operation_id].Case(path_parameters=path, query=query,
                                             headers={"Authorization": f"Bearer {token}"} if token else {})

    visitors = itertools.count()
    run = uuid.uuid4().hex[:6]  # account ids differ from any earlier run's, against the same API

    class Visits(RuleBasedStateMachine):
        """One member's visit: signed up and in first, then any of the rules."""

        def __init__(self):
            super().__init__()
            self.member: tuple[str, str] | None = None  # user id, access token
            self.reviews: dict[str, float] = {}  # movie -> rating, as written
            self.last: dict[str, str] = {}  # {"after": the last write's token}

        @initialize(data=st.data())
        def sign_up(self, data):
            case = data.draw(accounts)
            # A new id the API's rules accept (the stateless run fuzzes ids); the password is drawn.
            case.body = {**case.body, "user_id": f"member-{run}-{next(visitors)}"}
            if send(case, 201, 429).status_code == 201:  # 429: the API's limit on openings from here
                response = send(operations["issue_token"].Case(body=case.body), 200)
                if response.status_code == 200:
                    self.member = (case.body["user_id"], response.json()["access_token"])

        @precondition(lambda self: self.member)
        @rule(data=st.data())
        def submit(self, data):
            user, token = self.member
            case = data.draw(reviews)
            # Written now (reviewed_at must be between 1900 and now), with no Idempotency-Key: each is a new write.
            case.body = {**{k: v for k, v in case.body.items() if k != "reviewed_at"}, "user_id": user}
            case.headers = {"Authorization": f"Bearer {token}"}
            response = send(case, 202)
            if response.status_code == 202:
                self.reviews[case.body["movie_id"]] = case.body["rating"]
                self.last = {"after": response.json()["token"]}

        @precondition(lambda self: self.reviews)
        @rule(data=st.data())
        def retract(self, data):
            user, token = self.member
            movie = data.draw(st.sampled_from(sorted(self.reviews)))
            response = send(call("retract_review", user, token, movie), 202)
            if response.status_code == 202:
                del self.reviews[movie]
                self.last = {"after": response.json()["token"]}

        @precondition(lambda self: self.member)
        @rule(limit=st.integers(1, 3))
        def read_back(self, limit):
            user, _ = self.member
            found, query = {}, {"limit": limit, **self.last}
            while (response := send(call("user_reviews", user, **query), 200)).status_code == 200:
                page = response.json()
                found.update({review["movie_id"]: review["rating"] for review in page["reviews"]})
                if not page["next_cursor"]:
                    break
                query = {"limit": limit, "cursor": page["next_cursor"]}
            if response.status_code == 200 and found != self.reviews:
                tally.failed("GET /v1/users/{user_id}/reviews", "read back other reviews than were written", 200,
                             f"{user!r} wrote {self.reviews}, read {found}")
            send(call("user_history", user, limit=100), 200)

    start, rounds, visits = tally.cases, 0, 0
    while (done := tally.cases - start) < steps:
        per_visit = done / visits if visits else 2 * STEPS  # requests: a first guess, then as measured
        scenarios = max(1, math.ceil((steps - done) / per_visit))
        try:
            run_state_machine_as_test(seed(random_seed + rounds)(Visits), settings=settings(
                max_examples=scenarios, stateful_step_count=STEPS, database=None, deadline=None,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
        except Unsatisfiable:
            tally.failed("visits", "no valid request could be generated from the document", None, "")
            return
        rounds, visits = rounds + 1, visits + scenarios


# -- the seeded world -------------------------------------------------------------------------


def world_events() -> list:
    """The catalogue, each user's reviews of some of it, and one retraction (for the audit trail)."""
    from events.types import MovieCatalogued, ReviewRetracted, ReviewSubmitted

    at = datetime(2024, 5, 1, tzinfo=timezone.utc)
    events: list = [MovieCatalogued(event_id=f"fz-cat-{movie}", occurred_at=at, recorded_at=at, movie_id=movie,
                                    title=title, year=year, genres=genres) for movie, title, year, genres in MOVIES]
    for u, user in enumerate(USERS):
        for m, (movie, *_) in enumerate(MOVIES):
            if (u + m) % 3 == 0:
                when = at + timedelta(hours=u * 24 + m)
                events.append(ReviewSubmitted(event_id=f"fz-{user}-{movie}", occurred_at=when, recorded_at=when,
                                              user_id=user, movie_id=movie, rating=1 + (u * 7 + m * 3) % 9 / 2,
                                              summary=f"{user} on {movie}", reviewed_at=when))
    gone = events[-1]
    events.append(ReviewRetracted(event_id="fz-retracted", occurred_at=gone.occurred_at + timedelta(minutes=1),
                                  recorded_at=gone.occurred_at + timedelta(minutes=1), user_id=gone.user_id,
                                  movie_id=gone.movie_id))
    return events


def seed_world(bootstrap: str, topic: str, store, timeout: float = 60.0) -> None:
    """Append the world's events, wait until the projection holds them, and publish a model of it."""
    from events.codec import encode
    from events.types import MovieCatalogued

    events = world_events()
    asyncio.run(produce_batched(bootstrap, topic, [(e.key.encode(), encode(e)) for e in events], linger_ms=5,
                                label="seed"))
    deadline = time.monotonic() + timeout
    while len(store.catalogue()) < len(MOVIES) or not all(
            store.user_event(e.user_id, e.event_id) for e in events if not isinstance(e, MovieCatalogued)):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not project the seeded events in time")
        time.sleep(0.2)
    publish_model(store)


def publish_model(store) -> None:
    """A small random model of the seeded users and movies, as `harmony train` would publish one."""
    import numpy as np

    from ml import registry
    from ml.factors import FactorModel

    rng = np.random.default_rng(13)
    users, movies, rank, taste = np.array(USERS), np.array([m[0] for m in MOVIES]), 4, 2
    model = FactorModel(3.5, users, movies, rng.normal(0, 0.3, len(users)), rng.normal(0, 0.3, len(movies)),
                        rng.normal(0, 0.4, (len(users), rank)).astype(np.float32),
                        rng.normal(0, 0.4, (len(movies), rank)).astype(np.float32), np.full(len(movies), 5),
                        rng.normal(0, 0.3, (len(movies), taste)).astype(np.float32),
                        {"rank": rank, "reg": 0.1, "reg_user": 5.0, "taste_rank": taste, "taste_alpha": 1.0,
                         "taste_reg": 0.1, "min_reviews": 1})
    registry.publish(store, MemoryBucket(), "fuzz", "models/", model, trained_at=datetime.now(timezone.utc),
                     watermark={}, metrics={})


# -- the command ------------------------------------------------------------------------------


def parser():
    p = base_parser(__doc__)
    p.add_argument("--cases", type=int, default=10_000, help="requests in all (10000)")
    p.add_argument("--seed", type=int, default=0, help="of the generated requests (0)")
    p.add_argument("--base-url", default=None, help="fuzz this running API instead of starting a stack")
    return p


def run(args) -> dict:
    started = time.monotonic()
    if args.base_url:
        from harmony import bootstrap
        from harmony.settings import load as settings

        signer = bootstrap.token_signer(settings())
        tally = fuzz(args.base_url.rstrip("/"), args.cases, lambda user: f"Bearer {signer.issue(user)}", args.seed)
    else:
        tally = fuzz_local_stack(args)
    figures = tally.figures()
    for failure in figures["failures"]:
        console.print(f"[red]{failure['operation']}[/red] {failure['failure']} ({failure['status']}), "
                      f"×{failure['count']}:\n{failure['example']}")
    return {**figures, "seed": args.seed, "seconds": round(time.monotonic() - started, 1),
            "failed": bool(figures["failures"])}


def fuzz_local_stack(args) -> Tally:
    topic = fresh_topic("bench.fuzz")
    with local_stack("fuzz", topic, args.partitions, args.keep) as (state_dir, info):
        work = state_dir / "bench-fuzz"
        work.mkdir()
        env = {**child_env(state_dir, topic, args.partitions, work / "projections.db"),
               "HARMONY_ACCOUNTS_PER_HOUR": OPENINGS_PER_HOUR}
        port = free_port()
        children = [Child(["worker"], env, work / "worker.log", cwd=work),
                    Child(["api", "--port", str(port)], env, work / "api.log", cwd=work)]
        try:
            children[1].ready(port, timeout=60)
            children[0].check("the worker")
            store = sqlite_store(work / "projections.db")
            try:
                with console.status("seeding a catalogue, reviews and a model…"):
                    seed_world(info["kafka_bootstrap"], topic, store)
            finally:
                store.close()
            with console.status(f"fuzzing the API with {args.cases:,} requests…"):
                return fuzz(f"http://127.0.0.1:{port}", args.cases, authorization, args.seed)
        finally:
            for child in children:
                child.stop()


if __name__ == "__main__":
    raise SystemExit(run_benchmark("fuzz", __doc__, parser().parse_args(), run))
