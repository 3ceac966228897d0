"""Prometheus metrics, `GET /metrics`: what the API counts itself (requests by route, appends to the
log) and what it reads when scraped (the projector's lag, the current model, the archive's progress).

Each app has a registry of its own. Under `harmony api --workers N` each worker process counts its
own requests; with PROMETHEUS_MULTIPROC_DIR set before prometheus_client is first imported,
prometheus_client's multiprocess mode keeps every process's counts in files there and a scrape of any
worker adds them all up.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from typing import Callable, Iterable, Iterator

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commands.handlers import EventAppender
from events.log import LogUnavailable
from events.position import Position
from events.types import Event
from projections.store import ProjectionStore

log = logging.getLogger(__name__)

# Seconds. Reads take 1-10 ms and matches about 50 ms; the top buckets hold timeouts.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Any other method is counted as "other": label values must stay few whatever clients send.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

ArchivedOffsets = Callable[[], dict[int, int]]  # the last archived offset per partition


class RequestMetrics:
    """ASGI middleware: each request's latency by route template (`/v1/users/{user_id}/reviews`, not
    the path, so one series per route whatever the ids), method and status."""

    def __init__(self, app: ASGIApp, requests: Histogram):
        self.app = app
        self.requests = requests
        # (route, method, status) -> its series: `labels()` checks and locks, ten times a dict's cost.
        self.series: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers if the app raises before it starts a response

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope["route"].path_format if "route" in scope else UNMATCHED  # the router put it there
            method = scope["method"] if scope["method"] in METHODS else "other"
            key = (route, method, status)
            series = self.series.get(key) or self.series.setdefault(key, self.requests.labels(*key))
            series.observe(time.perf_counter() - started)


class InstrumentedLog:
    """An event appender that times every append and counts those the log did not take."""

    def __init__(self, event_log: EventAppender):
        self._log = event_log
        self.latency = Histogram("harmony_event_append_duration_seconds",
                                 "Appends to the event log, acknowledged or not", buckets=BUCKETS, registry=None)
        self.failures = Counter("harmony_event_append_failures", "Appends the event log did not acknowledge",
                                registry=None)

    async def append(self, event: Event) -> Position:
        started = time.perf_counter()
        try:
            return await self._log.append(event)
        except LogUnavailable:
            self.failures.inc()
            raise
        finally:
            self.latency.observe(time.perf_counter() - started)

    def collect(self) -> Iterator[Metric]:
        yield from self.latency.collect()
        yield from self.failures.collect()


class ReadAtScrape:
    """What other processes record, read at each scrape: the projector's last lag report and the
    current model from the store, and the archive's progress."""

    def __init__(self, store: ProjectionStore, archived: ArchivedOffsets | None):
        self.sources: dict[str, Callable[[], Iterable[Metric]]] = {"store": partial(store_metrics, store)}
        if archived is not None:
            self.sources["archive"] = partial(archive_metrics, archived)
        self.up = dict.fromkeys(self.sources, True)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("harmony_metrics_source_up", "1 if this scrape could read the source",
                               labels=["source"])
        for source, read in self.sources.items():
            try:
                families = list(read())
            except Exception as error:  # noqa: BLE001 - the API's own metrics are still worth answering
                if self.up[source]:  # once per outage, not at every scrape
                    log.warning("metrics source unreadable", extra={"source": source, "error": repr(error)})
                self.up[source] = False
            else:
                self.up[source] = True
                yield from families
            up.add_metric([source], int(self.up[source]))
        yield up


def store_metrics(store: ProjectionStore) -> list[Metric]:
    lag = GaugeMetricFamily("harmony_projector_lag", "Records the projector is behind the log, as of its last report",
                            labels=["partition"])
    refused = CounterMetricFamily(
        "harmony_projector_refused_commits", "Commits of a partition the store refused (another worker or a "
        "rebuild's swap moved its checkpoint first), as counted by the worker that owns it", labels=["partition"])
    for row in store.lag():
        lag.add_metric([str(row.partition)], row.lag)
        refused.add_metric([str(row.partition)], row.refused)
    families: list[Metric] = [lag, refused]
    reported_at = store.lag_reported_at()
    if reported_at is not None:  # `time() - this` growing past a few seconds: the projector stopped
        families.append(GaugeMetricFamily("harmony_projector_lag_reported_timestamp_seconds",
                                          "When the projector last recorded its lag", value=reported_at.timestamp()))
    model = store.model()
    if model is not None:
        families.append(InfoMetricFamily("harmony_model", "The model version the API serves",
                                         value={"version": model.version}))
        families.append(GaugeMetricFamily("harmony_model_trained_timestamp_seconds",
                                          "When the current model was trained", value=model.trained_at.timestamp()))
    return families


def archive_metrics(archived: ArchivedOffsets) -> list[Metric]:
    offsets = GaugeMetricFamily("harmony_archived_offset", "The last offset archived to S3", labels=["partition"])
    for partition, offset in archived().items():
        offsets.add_metric([str(partition)], offset)
    return [offsets]


def metrics(request: Request) -> Response:  # plain def: the store and S3 reads run in the thread pool
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def install(app: Starlette, appends: InstrumentedLog | None = None, archived: ArchivedOffsets | None = None) -> None:
    """Count the app's requests and serve them at GET /metrics, with the appends its commands make
    through `appends` and, if given, the offsets `archived` reads."""
    requests = Histogram("harmony_http_request_duration_seconds", "HTTP requests by route template",
                         ["route", "method", "status"], buckets=BUCKETS, registry=None)
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # every worker's counts, ours included, from their files
    else:
        registry.register(requests)
        if appends is not None:
            registry.register(appends)
    registry.register(ReadAtScrape(app.state.store, archived))
    app.state.metrics = registry
    app.add_middleware(RequestMetrics, requests=requests)
    app.router.routes.append(Route("/metrics", metrics, methods=["GET"]))
    app.state.openapi = with_metrics(app.state.openapi)


def with_metrics(document: bytes) -> bytes:
    """The app's OpenAPI document with GET /metrics in it (not JSON, so not one of its operations)."""
    spec = msgspec.json.decode(document)
    spec["paths"]["/metrics"] = {"get": {
        "summary": "Prometheus metrics: requests, appends, projector lag, model, archive", "operationId": "metrics",
        "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    return msgspec.json.encode(spec)
