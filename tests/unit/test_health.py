"""/readyz says whether the projector is alive: a lag report older than the bound makes the API not ready."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from api import health
from projections.store import PartitionLag

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def test_a_projector_that_stopped_reporting_is_stale():
    bound = timedelta(seconds=health.PROJECTOR_STALE_AFTER)
    assert health.projector_state(None, NOW) == health.NO_PROJECTOR_YET
    assert health.projector_state(NOW - timedelta(seconds=2), NOW) == "ok"
    assert health.projector_state(NOW - bound, NOW) == "ok"
    stale = health.projector_state(NOW - bound - timedelta(seconds=1), NOW)
    assert stale == f"stale: no lag report for {health.PROJECTOR_STALE_AFTER + 1:.0f} s"


def test_readyz_answers_503_once_the_lag_report_is_older_than_the_bound(world, monkeypatch):
    client, _, store = world
    monkeypatch.setattr(health, "PROJECTOR_STALE_AFTER", 0.5)
    # A fresh stack: no projector ran yet, and the API is ready all the same.
    fresh = client.get("/readyz")
    assert fresh.status_code == 200
    assert fresh.json() == {"status": "ready", "checks": {"broker": "ok", "store": "ok",
                                                          "projector": health.NO_PROJECTOR_YET}}

    store.record_lag([PartitionLag.of(0, 5, 6)])
    assert client.get("/readyz").json()["checks"]["projector"] == "ok"

    time.sleep(0.6)  # the projector stopped: no report within the bound
    stale = client.get("/readyz")
    assert stale.status_code == 503 and stale.headers["retry-after"] == "1"
    assert stale.json()["status"] == "not ready"
    assert stale.json()["checks"]["projector"].startswith("stale: no lag report for ")

    store.record_lag([PartitionLag.of(0, 6, 7)])  # it reports again
    assert client.get("/readyz").status_code == 200
