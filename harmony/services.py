"""Composition root: builds the API's collaborators from settings and serves it."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from commands.handlers import ReviewCommands
from events.log import KafkaEventLog
from harmony.settings import Settings, load
from projections.store import open_store

log = logging.getLogger(__name__)


def build_api(settings: Settings):
    if not settings.kafka_bootstrap:
        raise ValueError("no broker: run `harmony stack up` or set HARMONY_KAFKA_BOOTSTRAP")
    store = open_store(settings.store_url)
    event_log = KafkaEventLog(settings.kafka_bootstrap, settings.topic, timeout=settings.append_timeout)
    return create_app(store, event_log, ReviewCommands(event_log))


def api_from_environment():
    """The API of one uvicorn worker process: each builds its own producer and store connection."""
    return build_api(load())


def serve_api(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    options = dict(host=host, port=port, log_config=None, access_log=False, loop="uvloop", http="httptools")
    log.info("serving the API", extra={"url": f"http://{host}:{port}", "store": settings.store_url,
                                       "workers": workers})
    if workers == 1:
        uvicorn.run(build_api(settings), **options)
    else:
        build_api(settings)  # fail here, in one line, on a bad setting rather than in every worker
        uvicorn.run("harmony.services:api_from_environment", factory=True, workers=workers, **options)
