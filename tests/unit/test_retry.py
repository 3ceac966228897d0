"""Riding out an outage: what counts as a service being away, and the backoff between retries."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import IllegalStateError, KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from cassandra import InvalidRequest, OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout, WriteType
from cassandra.cluster import NoHostAvailable

from archive.buffer import s3_unavailable
from events import retry
from events.retry import broker_unavailable, retrying
from projections.cassandra_store import _unavailable_is_transient
from projections.store import StoreUnavailable
from projections.worker import unavailable


def s3_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_a_service_away_is_told_from_one_that_refuses():
    assert broker_unavailable(KafkaConnectionError("Unable to bootstrap"))
    assert broker_unavailable(KafkaTimeoutError())
    assert broker_unavailable(NotLeaderForPartitionError())  # a leader election after a restart
    assert broker_unavailable(TimeoutError("no progress reading the log for 10s"))
    assert not broker_unavailable(IllegalStateError("not assigned"))
    assert not broker_unavailable(ValueError("a bug"))

    assert s3_unavailable(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert s3_unavailable(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert s3_unavailable(s3_error(503, "SlowDown"))
    assert s3_unavailable(s3_error(500, "InternalError"))
    assert not s3_unavailable(s3_error(403, "AccessDenied"))
    assert not s3_unavailable(s3_error(404, "NoSuchBucket"))


@pytest.mark.parametrize("error", [
    NoHostAvailable("Unable to complete the operation", {"127.0.0.1": "Connection is overloaded"}),
    OperationTimedOut("no answer in 10 s"), Unavailable("2 replicas needed, 1 alive"),
    WriteTimeout("a replica was slow", write_type=WriteType.BATCH), ReadTimeout("a replica was slow"),
])
def test_cassandra_away_is_a_store_unavailable_which_the_worker_waits_out(error):
    with pytest.raises(StoreUnavailable) as raised, _unavailable_is_transient():
        raise error
    assert raised.value.__cause__ is error
    assert unavailable(raised.value) and unavailable(KafkaConnectionError("down"))


def test_a_store_that_refuses_is_not_waited_out():
    with pytest.raises(InvalidRequest) as raised, _unavailable_is_transient():
        raise InvalidRequest("unconfigured table")
    assert not unavailable(raised.value)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The pauses between retries, taken without waiting."""
    taken: list[float] = []

    async def sleep(seconds: float) -> None:
        taken.append(seconds)

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    return taken


def test_transient_failures_are_retried_with_capped_exponential_backoff(sleeps, caplog):
    failures = [KafkaConnectionError("down")] * 6

    async def attempt(value):
        if failures:
            raise failures.pop()
        return value

    with caplog.at_level(logging.WARNING, logger="events.retry"):
        assert asyncio.run(retrying(broker_unavailable, "reading", attempt, 42)) == 42
    assert sleeps == [0.5, 1.0, 2.0, 4.0, retry.MAX_DELAY, retry.MAX_DELAY]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.failures for r in warnings] == [1, 2, 3, 4, 5, 6]
    assert not any(r.exc_info for r in warnings), "a retry is one line, not a traceback"


def test_any_other_failure_is_raised_at_once(sleeps):
    async def attempt():
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        asyncio.run(retrying(broker_unavailable, "reading", attempt))
    assert sleeps == []
