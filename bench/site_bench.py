"""Site benchmark: title search (`projections.titles.TitleIndex`) in this process beside a naive scan, and the
catalogue search API and two website pages served by the real API over real HTTP, beside one store read.

    .venv/bin/python -m bench.site_bench [--titles 200000] [--queries 400] [--clients 16] [--duration 8]
                                         [--warmup 2] [--json]

No broker: a synthetic catalogue of --titles long-tailed titles (some accented, some with an apostrophe) and
queries typed as people type them (the first 1-3 words of a title, the last cut short; one in eight with a
word no title has). In process: the index's build time and memory, each query's latency, and a naive scan
of the pre-folded titles (filter only) on the same queries. Over HTTP (bench.load, --clients connections,
one endpoint at a time): GET /v1/movies/<id> (the baseline, one store read), the reviews page /users/<id>,
GET /v1/movies?q=, and the review form /review?q=, with their ratios to the baseline.
"""

from __future__ import annotations

import gc
import itertools
import os
import random
import string
import time
from pathlib import Path
from urllib.parse import quote

from bench.common import (
    SyntheticLog, authorization, base_parser, console, free_port, ratio, read_only_api, rss_mib, run_benchmark,
    scratch, timings,
)
from bench.load import get, measure
from bench.match_bench import GENRES

COMMON_WORDS = """the a of and in to my love night day man woman last first house city war star wars story
life death dark light king queen lost blood fire ice moon sun world time heart girl boy return rise fall
secret game dream summer winter spring autumn road home river island mountain sea ocean black white
red blue green gold silver iron stone glass shadow ghost angel devil hunter killer lady lord prince princess
family father mother brother sister child children friend stranger strangers lovers wild little big great
good bad new old young long short high deep cold hot hidden broken silent final empty golden eternal
american french english paris london york tokyo rome chicago texas wedding funeral party school college
street avenue station hotel garden castle empire kingdom republic revolution escape hunt chase quest journey
mission code zero one two three four ten hundred thousand million beyond under over inside outside between
before after again never always forever tonight tomorrow yesterday""".split()
ACCENTED = ("é", "è", "ü", "ñ", "ô")
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "en", "in", "on", "ar", "er", "or"]
NO_MATCH_WORD = "xq"  # no word starts with it: no syllable has a q


def parser():
    p = base_parser(__doc__, partitions=None)
    p.add_argument("--titles", type=int, default=200_000, help="titles in the catalogue (200000)")
    p.add_argument("--words", type=int, default=3000, help="distinct words titles are made of (3000)")
    p.add_argument("--queries", type=int, default=400, help="typed queries, searched in process and over HTTP (400)")
    p.add_argument("--naive-seconds", type=float, default=10.0,
                   help="stop the naive scan after this long (10; at least 20 queries)")
    p.add_argument("--users", type=int, default=50, help="users with reviews (50)")
    p.add_argument("--clients", type=int, default=16, help="concurrent keep-alive connections (16)")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per endpoint (8)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each endpoint (2)")
    p.add_argument("--seed", type=int, default=42)
    return p


# -- the catalogue and the queries -------------------------------------------------------------------


def word_list(rng: random.Random, n: int) -> list[str]:
    """Common English words, then made-up ones up to `n` words; about 4% accented, 3% with an apostrophe."""
    words = list(dict.fromkeys(COMMON_WORDS))
    seen = set(words)
    while len(words) < n:
        word = "".join(rng.choices(SYLLABLES, k=rng.randint(1, 4)))
        if word in seen:
            continue
        seen.add(word)
        if rng.random() < 0.04 and "e" in word:
            word = word.replace("e", rng.choice(ACCENTED), 1)
        elif rng.random() < 0.03:
            word += "'s"
        words.append(word)
    return words


def catalogue(n: int, n_words: int, seed: int) -> list:
    """`n` catalogue entries with titles of 1-6 words drawn with a long tail (the first words the commonest)."""
    from projections.store import CatalogueEntry

    rng = random.Random(seed)
    words = word_list(rng, n_words)
    cumulative = list(itertools.accumulate(1 / (rank + 1) ** 0.8 for rank in range(len(words))))
    entries = []
    for k in range(n):
        title = " ".join(w.capitalize() for w in rng.choices(words, cum_weights=cumulative, k=rng.randint(1, 6)))
        entries.append(CatalogueEntry(f"movie-{k:06d}", title, rng.randint(1920, 2024),
                                      sorted(rng.sample(GENRES, rng.randint(1, 3))), None))
    return entries


def typed_queries(titles: list[str], n: int, seed: int) -> list[str]:
    """The first 1-3 words of random titles in lower case, the last one cut short; one in eight with a word
    no title has."""
    rng = random.Random(seed + 1)
    queries = []
    for _ in range(n):
        words = rng.choice(titles).lower().split()
        typed = words[:rng.randint(1, min(3, len(words)))]
        typed[-1] = typed[-1][:rng.randint(1, len(typed[-1]))]
        if rng.random() < 1 / 8:
            typed.append(NO_MATCH_WORD + "".join(rng.choices(string.ascii_lowercase, k=rng.randint(0, 3))))
        queries.append(" ".join(typed))
    return queries


# -- in process: the index beside a naive scan -------------------------------------------------------


def naive_search(folded: list[str], query: str) -> list[int]:
    """The titles where every word of the query starts one of the title's words, or is one when all are
    one letter long (not ranked); `folded` holds each title's folded words joined, each between spaces
    (" star wars "), so " wa" finds a start and " a " a whole word."""
    from projections.titles import MIN_PREFIX, folded_words

    terms = folded_words(query)
    whole = all(len(term) < MIN_PREFIX for term in terms)
    needles = [f" {term} " if whole else f" {term}" for term in terms]
    return [n for n, title in enumerate(folded) if all(needle in title for needle in needles)]


def in_process(entries: list, queries: list[str], naive_seconds: float) -> dict:
    from projections.titles import TitleIndex, folded_words

    gc.collect()
    rss_before = rss_mib(os.getpid())
    started = time.perf_counter()
    index = TitleIndex(entries)
    build_s = time.perf_counter() - started
    gc.collect()
    rss_growth = rss_mib(os.getpid()) - rss_before

    perf = time.perf_counter
    indexed, found = [], []
    for query in queries:
        t0 = perf()
        found.append(index.search(query, 0, 10)[0])  # how many match, and the first page
        indexed.append(perf() - t0)

    started = perf()
    folded = [f" {' '.join(folded_words(entry.title))} " for entry in entries]
    fold_s = perf() - started
    naive, disagree = [], 0
    until = perf() + naive_seconds
    for k, query in enumerate(queries):
        if k >= 20 and perf() > until:
            break
        t0 = perf()
        hits = naive_search(folded, query)
        naive.append(perf() - t0)
        disagree += len(hits) != found[k]
    n = len(naive)
    same = timings(indexed[:n])
    return {"titles": len(entries), "distinct_words": len({w for title in folded for w in title.split()}),
            "index_build_s": round(build_s, 2), "index_rss_growth_mib": round(rss_growth, 1), "index": timings(indexed),
            "matches_mean": round(sum(found) / len(found), 1), "no_match_queries": found.count(0),
            "naive_prefold_s": round(fold_s, 2), "naive": timings(naive), "index_same_queries": same,
            "naive_disagreements": disagree,
            "ratios": {"naive_over_index_p50": ratio(timings(naive)["p50_ms"], same["p50_ms"], 2),
                       "naive_over_index_p99": ratio(timings(naive)["p99_ms"], same["p99_ms"], 2)}}


# -- over HTTP ---------------------------------------------------------------------------------------


def build_store(path: Path, entries: list, users: int, seed: int) -> dict:
    """The catalogue and `users` users' reviews (10-40 each), projected into a SQLite store at `path`."""
    started = time.perf_counter()
    rng = random.Random(seed + 2)
    log = SyntheticLog()
    for entry in entries:
        log.catalogue(entry.movie_id, entry.title, entry.year, entry.genres)
    for u in range(users):
        user = f"user-{u:03d}"
        for movie in rng.sample(entries, rng.randint(10, 40)):
            n = len(log.records) - len(entries)
            log.review(user, movie.movie_id, rng.randint(1, 10) / 2, summary=f"Summary {n}",
                       text=f"Review {n} by {user}.")
    return {"movies": len(entries), "users": users, "reviews": len(log.records) - len(entries), **log.project(path),
            "build_s": round(time.perf_counter() - started, 1)}


def targets(entries: list, queries: list[str], users: int, seed: int) -> dict[str, tuple[str, list[bytes]]]:
    """The measured endpoints in the order they run: name -> (what is asked, pre-encoded requests)."""
    rng = random.Random(seed + 3)
    movies = [entry.movie_id for entry in rng.sample(entries, 2000)]
    signed_in = authorization("user-000").removeprefix("Bearer ")
    return {
        "movie": ("GET /v1/movies/<id> (baseline: one store read)", [get(f"/v1/movies/{m}") for m in movies]),
        "user_page": ("GET /users/<id> (website: reviews page)", [get(f"/users/user-{u:03d}") for u in range(users)]),
        "search": ("GET /v1/movies?q=<query>&limit=10", [get(f"/v1/movies?q={quote(q)}&limit=10") for q in queries]),
        # The form is for a signed-in visitor: the session cookie the sign-in page would set.
        "review_page": ("GET /review?q=<query> (website: review form, finder's matches)",
                        [get(f"/review?q={quote(q)}", f"Cookie: session=user-000:{signed_in}") for q in queries]),
    }


def serve(work: Path, store_path: Path, endpoints: dict, first_query: str, args) -> dict:
    """`harmony api` on the store; its first search (the index build), then each endpoint under load."""
    import httpx

    port = free_port()
    api = read_only_api(port, work, store_path)
    figures: dict = {}
    try:
        figures["started_s"] = round(api.ready(port, "/healthz"), 2)
        started = time.monotonic()
        first = httpx.get(f"http://127.0.0.1:{port}/v1/movies", params={"q": first_query}, timeout=120)
        figures["first_search_s"] = round(time.monotonic() - started, 2)
        if first.status_code != 200:
            raise RuntimeError(f"the first search answered {first.status_code}: {first.text[:500]}")
        for name, (label, requests) in endpoints.items():
            result = measure(api, port, requests, args.clients, args.warmup, args.duration, {"api": api.pid},
                             label=label)
            figures[name] = {"what": label, **{k: result[k] for k in ("per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                                                                        "errors", "statuses", "cpu_us_per_answer")}}
    finally:
        api.stop()
    base = figures["movie"]
    for name in endpoints:
        figures[name]["per_s_over_baseline"] = ratio(figures[name]["per_s"], base["per_s"], 2)
        figures[name]["p50_over_baseline"] = ratio(figures[name]["p50_ms"], base["p50_ms"], 2)
    return figures


# -- the benchmark -----------------------------------------------------------------------------------


def run(args) -> dict:
    figures: dict = {"benchmark": "site", "clients": args.clients, "duration_s": args.duration,
                     "warmup_s": args.warmup}
    with console.status(f"making {args.titles:,} titles and {args.queries} queries…"):
        entries = catalogue(args.titles, args.words, args.seed)
        queries = typed_queries([entry.title for entry in entries], args.queries, args.seed)
    with console.status("in process: building the index, searching, scanning…"):
        figures["in_process"] = in_process(entries, queries, args.naive_seconds)
    console.log(f"in process: {figures['in_process']}")
    with scratch("site", args.keep) as directory:
        store_path = directory / "projections.db"
        figures["store"] = build_store(store_path, entries, args.users, args.seed)
        console.log(f"store: {figures['store']}")
        endpoints = targets(entries, queries, args.users, args.seed)
        figures["http"] = serve(directory, store_path, endpoints, queries[0], args)
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("site", __doc__, parser().parse_args(), run))
