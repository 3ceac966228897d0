"""`harmony api`: serve the API the composition root builds, in one or several processes."""

from __future__ import annotations

import logging
import os

import uvicorn

from events.errors import HarmonyError
from harmony import bootstrap, logs
from harmony.settings import Settings, load

log = logging.getLogger(__name__)


def api_from_environment():
    """The API of one uvicorn worker process: each builds its own producer and store connection."""
    settings = load()
    logs.configure(settings.log_format)
    return bootstrap.api(settings)


def serve_api(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    if workers < 1:
        raise HarmonyError(f"--workers must be at least 1, not {workers}")
    # Requests already score in parallel threads: BLAS threads for each small product only fight
    # them for the cores (bench.match_bench: 5x the CPU a /v1/match). Before NumPy loads; workers inherit it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    options = dict(host=host, port=port, log_config=None, access_log=False, loop="uvloop", http="httptools")
    log.info("serving the API", extra={"url": f"http://{host}:{port}", "store": settings.store_url,
                                       "workers": workers})
    if workers == 1:
        uvicorn.run(bootstrap.api(settings), **options)
    else:
        bootstrap.api(settings)  # fail here, in one line, on a bad setting rather than in every worker
        uvicorn.run("harmony.services:api_from_environment", factory=True, workers=workers, **options)
