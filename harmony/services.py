"""`harmony api`: serve the API the composition root builds, in one or several processes."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile

import uvicorn

from events.errors import HarmonyError
from harmony import bootstrap, logs
from harmony.http_protocol import TimedHttpToolsProtocol, Timeouts
from harmony.settings import Settings, load

log = logging.getLogger(__name__)


def api_from_environment():
    """The API of one uvicorn worker process: each builds its own producer and store connection."""
    settings = load()
    logs.configure(settings.log_format)
    return bootstrap.api(settings)


def serve_api(settings: Settings, host: str, port: int, workers: int = 1, timeouts: Timeouts = Timeouts()) -> None:
    if workers < 1:
        raise HarmonyError(f"--workers must be at least 1, not {workers}")
    # Requests already score in parallel threads: BLAS threads for each small product only fight
    # them for the cores (bench.match_bench: 5x the CPU a /v1/match). Before NumPy loads; workers inherit it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Forwarded headers name the client (the sign-in throttle's key) and the scheme (secure
    # cookies) only when they come from a proxy the deployment names: uvicorn's default trusts
    # anything on 127.0.0.1, where any local relay would let a client pick its address.
    options = dict(host=host, port=port, log_config=None, access_log=False, loop="uvloop",
                   http=functools.partial(TimedHttpToolsProtocol, timeouts=timeouts),
                   proxy_headers=bool(settings.trusted_proxies), forwarded_allow_ips=settings.trusted_proxies or None)
    log.info("serving the API", extra={"url": f"http://{host}:{port}", "store": settings.store_url,
                                       "workers": workers})
    if workers == 1:
        uvicorn.run(bootstrap.api(settings), **options)
        return
    # Each worker counts its own requests: prometheus_client's multiprocess mode keeps the counts in
    # files there that a scrape of any worker adds up (api/metrics.py). Set before prometheus_client
    # is imported (bootstrap.api imports it); the workers inherit it.
    counts = tempfile.mkdtemp(prefix="harmony-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = counts
    try:
        bootstrap.api(settings)  # fail here, in one line, on a bad setting rather than in every worker
        uvicorn.run("harmony.services:api_from_environment", factory=True, workers=workers, **options)
    finally:
        shutil.rmtree(counts, ignore_errors=True)
