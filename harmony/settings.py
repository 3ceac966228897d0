"""Every setting in one place, read from the environment.

| variable | default |
|---|---|
| `HARMONY_STATE_DIR` | `.harmony/` in the project folder (ignored by git) |
| `HARMONY_KAFKA_BOOTSTRAP` | the broker of the running local stack |
| `HARMONY_S3_ENDPOINT` | the S3 server of the running local stack |
| `HARMONY_S3_BUCKET` | `harmony-archive` |
| `HARMONY_STORE` | `sqlite:///<state dir>/projections.db` (or `cassandra://h1,h2/keyspace`) |
| `HARMONY_TOPIC` | `harmony.reviews` (the dead-letter topic adds `.deadletter`) |
| `HARMONY_PARTITIONS` | `6` (used when the topic is created) |
| `HARMONY_APPEND_TIMEOUT` | `3.0` seconds before a command answers 503 |
| `HARMONY_LOG_FORMAT` | `json` (or `console`) |
| `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION` | the local stack's keys, `us-east-1` |

Explicit variables win over what the local stack reports in `<state dir>/stack.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    kafka_bootstrap: str
    s3_endpoint: str
    s3_bucket: str
    store_url: str
    topic: str
    partitions: int
    append_timeout: float
    log_format: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_region: str

    @property
    def deadletter_topic(self) -> str:
        return f"{self.topic}.deadletter"


def state_dir() -> Path:
    return Path(os.environ.get("HARMONY_STATE_DIR") or PROJECT_DIR / ".harmony").resolve()


def load() -> Settings:
    env = os.environ
    directory = state_dir()
    stack = _running_stack(directory)
    return Settings(
        state_dir=directory,
        kafka_bootstrap=env.get("HARMONY_KAFKA_BOOTSTRAP") or stack.get("kafka_bootstrap", ""),
        s3_endpoint=env.get("HARMONY_S3_ENDPOINT") or stack.get("s3_endpoint", ""),
        s3_bucket=env.get("HARMONY_S3_BUCKET", "harmony-archive"),
        store_url=env.get("HARMONY_STORE") or f"sqlite:///{directory / 'projections.db'}",
        topic=env.get("HARMONY_TOPIC", "harmony.reviews"),
        partitions=int(env.get("HARMONY_PARTITIONS", "6")),
        append_timeout=float(env.get("HARMONY_APPEND_TIMEOUT", "3.0")),
        log_format=env.get("HARMONY_LOG_FORMAT", "json"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or stack.get("access_key", ""),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or stack.get("secret_key", ""),
        aws_region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def _running_stack(directory: Path) -> dict:
    try:
        return json.loads((directory / "stack.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
