"""Riding out an outage: retry what failed because a service was away, with capped exponential backoff.

The worker and the archiver keep no state a retry could corrupt: each operation they retry goes on
from the stores' checkpoints (the projection store's, S3's), so doing it again is safe. What fails
for another reason (a bug, a store that refuses) is not retried: it crashes the process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.5  # seconds before the first retry; doubled after each failure
MAX_DELAY = 5.0  # seconds between retries at most: a service that is back is used again soon


def broker_unavailable(error: BaseException) -> bool:
    """True for failures that mean the broker is away for now (down, restarting, electing a leader)."""
    return isinstance(error, (TimeoutError, KafkaConnectionError, KafkaTimeoutError)) or (
        isinstance(error, KafkaError) and error.retriable)


async def retrying(
    transient: Callable[[BaseException], bool], what: str, attempt: Callable[..., Awaitable[T]], *args
) -> T:
    """Await attempt(*args) until it succeeds, waiting longer after each transient failure (up to
    MAX_DELAY); any other failure is raised."""
    delay, failures = FIRST_DELAY, 0
    while True:
        try:
            result = await attempt(*args)
        except Exception as error:
            if not transient(error):
                raise
            failures += 1
            log.warning(f"{what} failed; retrying", extra={
                "failures": failures, "retry_in_s": delay, "error": repr(error)})
            await asyncio.sleep(delay)
            delay = min(2 * delay, MAX_DELAY)
        else:
            if failures:
                log.info(f"{what} succeeded again", extra={"failures": failures})
            return result
