"""Forget me, end to end on the real servers: a user who wrote distinctive reviews is forgotten, the
model is trained again without them, rebuild and verify still pass, and then neither their user
id, nor their summaries, nor their texts are in any byte the stack, the store, the key store, the
artefacts and the processes' logs left on disk."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from archive.progress import ArchiveProgress
from archive.segments import read_archive, s3_client
from events.reader import log_offsets
from tests.conftest import serving, wait_until
from tests.integration.helpers import produce_events, review_stream

pytestmark = pytest.mark.integration

PASSWORD = "a long enough password"
# Small and without the holdout's evaluation fit (a second fit that only measures): what is checked is
# which ratings the published model saw.
TRAIN = {"HARMONY_ALS_RANK": "4", "HARMONY_ALS_MAX_ITER": "5", "HARMONY_SPARK_DRIVER_MEMORY": "1g",
         "HARMONY_TRAIN_HOLDOUT": "0"}


def harmony(env, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "harmony", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def archived_up_to_the_log_end(settings) -> bool:
    ends = asyncio.run(log_offsets(settings.kafka_bootstrap, settings.topic))
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    done = ArchiveProgress(s3, settings.s3_bucket, settings.topic).archived()
    return all(done.get(p, -1) >= held.stop - 1 for p, held in ends.items() if len(held))


def train(env, settings) -> dict:
    wait_until(lambda: archived_up_to_the_log_end(settings), 60, "the archiver did not reach the log end")
    return json.loads(harmony({**env, **TRAIN}, "train", "--no-tune", "--json").stdout)


def files_holding(folders: list[Path], secrets: list[bytes]) -> list[str]:
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [f"{path}: {secret!r}" for secret in secrets if secret in data]
    return found


def test_a_forgotten_user_is_in_no_byte_on_disk_and_the_next_model_never_saw_them(
        env, settings, services, start_worker, live_store, stack_dir, tmp_path):
    tag = uuid.uuid4().hex[:10]
    user, summary, text = f"forget-me-{tag}", f"Quixotic{tag} summary", f"Perspicacious{tag} words of mine"
    produce_events(settings.kafka_bootstrap, settings.topic, review_stream(1500, users=30, movies=40))
    running = [start_worker(), services("archiver")]
    server, api = serving(services)
    running.append(server)
    assert api.post("/v1/accounts", json={"user_id": user, "password": PASSWORD}).status_code == 201
    token = api.post("/v1/tokens", json={"user_id": user, "password": PASSWORD}).json()["access_token"]
    me = {"Authorization": f"Bearer {token}"}
    for n, movie in enumerate(("m1", "m2", "m3")):
        written = api.post("/v1/reviews", headers=me, json={"user_id": user, "movie_id": movie, "rating": 5.0,
                                                            "summary": f"{summary} {n}", "text": f"{text} {n}"})
        assert written.status_code == 202, written.text
    mine = api.get(f"/v1/users/{user}/reviews", params={"after": written.json()["token"]}).json()["reviews"]
    assert {r["summary"] for r in mine} == {f"{summary} {n}" for n in range(3)}
    before = train(env, settings)
    assert live_store.factors(before["version"], "user", [user])  # the model knew them
    counts = {m: live_store.movie(m).review_count for m in ("m1", "m2", "m3")}

    forgot = api.delete(f"/v1/users/{user}", headers=me)
    assert forgot.status_code == 202, forgot.text
    for path in (f"/v1/users/{user}/reviews", f"/v1/users/{user}/history"):
        answer = api.get(path)
        assert answer.status_code == 404 and "asked to be forgotten" in answer.json()["detail"]
    assert not live_store.factors(before["version"], "user", [user])  # at once, not at the next training
    wait_until(lambda: not live_store.user_history(user, 0, None, None) and live_store.account(user) is None, 30,
               "the projector did not drop the forgotten user's rows")
    assert {m: live_store.movie(m).review_count for m in counts} == {m: n - 1 for m, n in counts.items()}

    after = train(env, settings)
    assert after["metrics"]["ratings"] == before["metrics"]["ratings"] - 3  # exactly their ratings
    assert after["metrics"]["unreadable_events"] == 3
    assert not live_store.factors(after["version"], "user", [user])
    assert json.loads(harmony(env, "verify", "--json").stdout)["ok"]
    harmony(env, "rebuild", "all", "--json")
    assert json.loads(harmony(env, "verify", "--json").stdout)["ok"]

    secrets = [user.encode(), summary.encode(), text.encode()]
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    archived = [record.value for batch in read_archive(s3, settings.s3_bucket, settings.topic) for record in batch]
    assert len(archived) > 1500 and not [v for v in archived if any(s in (v or b"") for s in secrets)]
    for service in running:
        service.stop()  # every process's last log lines are on disk
    assert files_holding([stack_dir, tmp_path], secrets) == []
