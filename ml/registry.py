"""The model registry: publishing a trained model as a new version, and loading one back.

Publication is ordered so that a reader never sees half a model:

1. the artefacts go to S3 under ``<prefix><version>/``: ``model.npz`` (biases and factors, see
   :mod:`ml.factors`), then ``manifest.json`` (the registry row) — a version with a manifest
   is complete;
2. the user and item factor rows (with their rating counts) and the items' taste rows (kind
   ``taste``, no bias) go to the projection store, in batches, under the version;
3. the registry row is written and made current in one store transaction.

A crash before step 3 leaves the current model as it was (and some unreferenced rows or
objects of a version nobody points at). Old versions stay readable by their version.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import msgspec
import numpy as np

from ml.factors import FactorModel
from projections.store import FactorRow, ModelInfo, ProjectionStore

BATCH = 20_000  # factor rows per store write


def new_version(trained_at: datetime) -> str:
    """Sortable by time, unique across concurrent runs."""
    return f"{trained_at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _rows(ids: np.ndarray, biases: np.ndarray, vectors: np.ndarray, counts: np.ndarray) -> list[FactorRow]:
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    return [FactorRow(str(id), float(bias), vector.tobytes(), int(count))
            for id, bias, vector, count in zip(ids, biases, vectors, counts)]


def publish(store: ProjectionStore, s3, bucket: str, prefix: str, model: FactorModel, *, trained_at: datetime,
            watermark: dict[int, int], metrics: dict) -> ModelInfo:
    version = new_version(trained_at)
    folder = f"{prefix}{version}/"
    info = ModelInfo(version=version, trained_at=trained_at, watermark=watermark, metrics=metrics,
                     params=model.params, mu=model.mu, rank=model.rank, artefacts=f"s3://{bucket}/{folder}")
    s3.put_object(Bucket=bucket, Key=folder + "model.npz", Body=model.to_bytes(),
                  ContentType="application/octet-stream")
    s3.put_object(Bucket=bucket, Key=folder + "manifest.json", Body=msgspec.json.encode(info),
                  ContentType="application/json")
    no_bias, no_count = np.zeros(len(model.item_ids)), np.zeros(len(model.user_ids), dtype=int)
    for kind, ids, biases, vectors, counts in (
            ("user", model.user_ids, model.user_bias, model.user_factors, no_count),
            ("item", model.item_ids, model.item_bias, model.item_factors, model.item_counts),
            ("taste", model.item_ids, no_bias, model.item_taste, model.item_counts)):
        for start in range(0, len(ids), BATCH):
            end = start + BATCH
            store.put_factors(version, kind, _rows(ids[start:end], biases[start:end], vectors[start:end],
                                                   counts[start:end]))
    store.publish_model(info)
    return info


def decode_rows(rows: list[FactorRow], rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ids, biases and (rows x rank) float32 vectors of factor rows, in their order."""
    vectors = np.frombuffer(b"".join(row.vector for row in rows), dtype="<f4").reshape(len(rows), rank)
    return (np.array([row.id for row in rows], dtype=str), np.array([row.bias for row in rows], dtype=float),
            vectors.astype(np.float32))


def taste_rank(info: ModelInfo) -> int:
    return int(info.params.get("taste_rank", 0))


def load(store: ProjectionStore, version: str | None = None) -> tuple[ModelInfo, FactorModel] | None:
    """A published version (None: the current one) rebuilt from the store's rows alone."""
    info = store.model(version)
    if info is None:
        return None
    user_ids, user_bias, user_factors = decode_rows(store.factors(info.version, "user"), info.rank)
    item_rows = store.factors(info.version, "item")
    item_ids, item_bias, item_factors = decode_rows(item_rows, info.rank)
    _, _, item_taste = decode_rows(store.factors(info.version, "taste"), taste_rank(info))
    return info, FactorModel(info.mu, user_ids, item_ids, user_bias, item_bias, user_factors, item_factors,
                             np.array([row.count for row in item_rows]), item_taste, dict(info.params))


def read_artefacts(s3, info: ModelInfo) -> FactorModel:
    """The version's S3 artefacts, as published."""
    bucket, _, folder = info.artefacts.removeprefix("s3://").partition("/")
    model = FactorModel.from_bytes(s3.get_object(Bucket=bucket, Key=folder + "model.npz")["Body"].read())
    model.params = dict(info.params)
    return model
