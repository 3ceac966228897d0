"""GET /metrics (api/metrics.py): requests by route template, appends, and what the store and the
archive record, scraped and parsed as Prometheus parses them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_app
from api.metrics import InstrumentedLog, install
from commands.handlers import ReviewCommands
from projections.sqlite_store import SQLiteStore
from projections.store import ModelInfo, PartitionLag
from tests.unit.fakes import MemoryLog, bearer, memory_auth, memory_forgetting

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUESTS = "harmony_http_request_duration_seconds"
REVIEW = {"user_id": "ana", "movie_id": "m1", "rating": 4.5}


def instrumented_app(store, log, archived=None):
    appends = InstrumentedLog(log)
    app = create_app(store, log, ReviewCommands(appends), memory_auth(log, store),
                     memory_forgetting(log, store, store.path.with_name("keys.db")))
    install(app, appends, archived)
    return app


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    yield store
    store.close()


@pytest.fixture
def log():
    return MemoryLog()


@pytest.fixture
def client(store, log):
    with TestClient(instrumented_app(store, log)) as client:
        yield client


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics: (name, its labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def requests(samples: dict, route: str, method: str, status: str) -> float | None:
    return value(samples, f"{REQUESTS}_count", route=route, method=method, status=status)


def test_requests_are_counted_by_route_template_method_and_status(client):
    for user in ("1", "2", "3"):
        assert client.get(f"/v1/users/{user}/reviews").status_code == 200
    assert client.get("/v1/movies/nothing").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    assert client.post("/healthz").status_code == 405
    assert client.request("BREW", "/healthz").status_code == 405

    samples = scrape(client)
    assert requests(samples, "/v1/users/{user_id}/reviews", "GET", "200") == 3
    assert requests(samples, "/v1/movies/{movie_id}", "GET", "404") == 1
    assert requests(samples, "unmatched", "GET", "404") == 1
    assert requests(samples, "/healthz", "POST", "405") == 1
    assert requests(samples, "/healthz", "other", "405") == 1
    routes = {dict(labels)["route"] for name, labels in samples if name == f"{REQUESTS}_count"}
    assert not any(route.startswith("/v1/users/1") or route.startswith("/no/") for route in routes)
    # A histogram: every request falls in the +Inf bucket, and fast ones in the small buckets too.
    assert value(samples, f"{REQUESTS}_bucket", route="/v1/users/{user_id}/reviews", method="GET", status="200",
                 le="+Inf") == 3
    assert value(samples, f"{REQUESTS}_bucket", route="/v1/users/{user_id}/reviews", method="GET", status="200",
                 le="10.0") == 3


def test_a_request_that_fails_inside_the_app_is_counted_as_a_500(store, log):
    class BrokenStore(SQLiteStore):
        def lag(self):
            raise RuntimeError("the store broke")

    broken = BrokenStore(store.path)
    try:
        with TestClient(instrumented_app(broken, log), raise_server_exceptions=False) as client:
            assert client.get("/v1/projections/lag").status_code == 500
            samples = scrape(client)  # the store cannot be read: the API's own metrics still answer
    finally:
        broken.close()
    assert requests(samples, "/v1/projections/lag", "GET", "500") == 1
    assert value(samples, "harmony_metrics_source_up", source="store") == 0


def test_appends_are_timed_and_failures_counted(client, log):
    for movie in ("m1", "m2"):
        assert client.post("/v1/reviews", headers=bearer("ana"), json={**REVIEW, "movie_id": movie}).status_code == 202
    log.down = True
    assert client.post("/v1/reviews", headers=bearer("ana"), json=REVIEW).status_code == 503

    samples = scrape(client)
    assert value(samples, "harmony_event_append_duration_seconds_count") == 3
    assert value(samples, "harmony_event_append_failures_total") == 1
    assert requests(samples, "/v1/reviews", "POST", "202") == 2
    assert requests(samples, "/v1/reviews", "POST", "503") == 1


def test_the_projectors_lag_and_the_current_model_are_read_from_the_store(client, store):
    samples = scrape(client)
    assert value(samples, "harmony_metrics_source_up", source="store") == 1
    assert not any(name.startswith(("harmony_model", "harmony_projector_lag")) for name, _ in samples)

    before = datetime.now(timezone.utc).timestamp()
    store.record_lag([PartitionLag.of(0, 5, 10), PartitionLag.of(1, -1, 0)])
    after = datetime.now(timezone.utc).timestamp()
    trained_at = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
    store.publish_model(ModelInfo("v7", trained_at, {0: 5}, {}, {}, 3.5, 8, "s3://b/models/v7"))
    samples = scrape(client)
    assert value(samples, "harmony_projector_lag", partition="0") == 4
    assert value(samples, "harmony_projector_lag", partition="1") == 0
    assert before <= value(samples, "harmony_projector_lag_reported_timestamp_seconds") <= after
    assert value(samples, "harmony_model_info", version="v7") == 1
    assert value(samples, "harmony_model_trained_timestamp_seconds") == trained_at.timestamp()


def test_the_archived_offsets_are_read_at_each_scrape(store, log):
    offsets = {0: 41, 3: 7}
    with TestClient(instrumented_app(store, log, archived=lambda: dict(offsets))) as client:
        samples = scrape(client)
        assert value(samples, "harmony_archived_offset", partition="0") == 41
        assert value(samples, "harmony_archived_offset", partition="3") == 7
        offsets[0] = 99
        assert value(scrape(client), "harmony_archived_offset", partition="0") == 99


def test_an_archive_that_cannot_be_read_leaves_the_rest(store, log):
    def unreachable() -> dict[int, int]:
        raise ConnectionError("S3 does not answer")

    with TestClient(instrumented_app(store, log, archived=unreachable)) as client:
        samples = scrape(client)
    assert value(samples, "harmony_metrics_source_up", source="archive") == 0
    assert value(samples, "harmony_metrics_source_up", source="store") == 1
    assert not any(name == "harmony_archived_offset" for name, _ in samples)


def test_each_app_counts_its_own_requests(store, log):
    with TestClient(instrumented_app(store, log)) as one, TestClient(instrumented_app(store, log)) as two:
        one.get("/healthz")
        one.get("/healthz")
        two.get("/healthz")
        assert requests(scrape(one), "/healthz", "GET", "200") == 2
        assert requests(scrape(two), "/healthz", "GET", "200") == 1


# One API worker process: `healthz` requests and `reviews` appends, then (with `show`) its /metrics on stdout.
WORKER = textwrap.dedent("""
    import sys
    from starlette.testclient import TestClient
    from projections.sqlite_store import SQLiteStore
    from tests.unit.fakes import MemoryLog, bearer
    from tests.unit.test_metrics import instrumented_app

    store_path, healthz, reviews, show = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "show"
    log = MemoryLog()
    with TestClient(instrumented_app(SQLiteStore(store_path), log)) as client:
        for _ in range(healthz):
            client.get("/healthz")
        for n in range(reviews):
            client.post("/v1/reviews", headers=bearer("ana"), json={"user_id": "ana", "movie_id": f"m{n}", "rating": 3})
        if show:
            print(client.get("/metrics").text)
""")


def test_with_a_multiprocess_directory_a_scrape_adds_up_every_worker(tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": PROJECT}

    def worker(healthz: int, reviews: int, show: bool) -> str:
        done = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "p.db"), str(healthz), str(reviews),
                               "show" if show else "quiet"], env=env, cwd=PROJECT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker(3, 2, show=False)
    text = worker(2, 1, show=True)
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert requests(samples, "/healthz", "GET", "200") == 5
    assert requests(samples, "/v1/reviews", "POST", "202") == 3
    assert value(samples, "harmony_event_append_duration_seconds_count") == 3
    assert value(samples, "harmony_metrics_source_up", source="store") == 1


def test_the_openapi_document_lists_metrics_as_text(client):
    spec = client.get("/openapi.json").json()
    answer = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(answer) == ["text/plain"]
    assert "/v1/reviews" in spec["paths"]  # the rest of the document is still there
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
