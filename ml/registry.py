"""The model registry: publishing a trained model as a new version, and loading one back.

Publication is ordered so that a reader never sees half a model:

1. the user and item factor rows (with their rating counts) and the items' taste rows (kind
   ``taste``, no bias) go to the projection store under the version, a chunk at a time, each
   item and taste chunk also to S3 under ``<prefix><version>/`` as ``<kind>-<part>.npz`` (ids,
   biases, vectors, counts); the model is streamed out of Spark, never whole on the driver. A
   user's factors are personal data: they live in the store alone, where forgetting the user
   deletes them (``ModelRegistry.forget_factors``), never in an artefact kept for years;
2. then ``manifest.json`` (the registry row): a version with a manifest is complete;
3. the registry row is written and made current in one store transaction.

A crash before step 3 leaves the current model as it was (and some unreferenced rows or
objects of a version nobody points at). Old versions stay readable by their version until
:func:`retain` deletes them.

Retention undoes publication in reverse: the registry row first (a reader then finds no version,
never one with rows or artefacts missing), then the factor rows, then the artefacts, manifest
first. So whatever a crash leaves of a version is under its S3 folder with no registry row: the
leftovers of a publication that died, which the next :func:`retain` deletes once they are old.
"""

from __future__ import annotations

import io
import re
import secrets
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pandas as pd

from ml.factors import FactorModel, Published
from projections.store import FactorRow, ModelInfo, ProjectionStore

BATCH = 20_000  # factor rows per store write
VERSION = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")  # a name new_version gives
# How long after its artefacts were written an unpublished version counts as a dead publication's.
# Not "older than the newest published version": versions sort by when training started, and a long
# run started earlier may still be writing its factor rows after a later run published. Writing
# them takes minutes at most; a day leaves room for a stalled one.
ORPHAN_AGE = timedelta(days=1)


def new_version(trained_at: datetime) -> str:
    """Sortable by time, unique across concurrent runs."""
    return f"{trained_at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _rows(ids: np.ndarray, biases: np.ndarray, vectors: np.ndarray, counts: np.ndarray) -> list[FactorRow]:
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    return [FactorRow(str(id), float(bias), vector.tobytes(), int(count))
            for id, bias, vector, count in zip(ids, biases, vectors, counts)]


KINDS = ("user", "item", "taste")
ARCHIVED = ("item", "taste")  # the kinds written to S3 too: about movies, not people


def _part(ids: list[str], biases: np.ndarray, vectors: np.ndarray, counts: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.asarray(ids, dtype=str), biases=biases, vectors=np.asarray(vectors, dtype="<f4"),
             counts=counts)
    return buffer.getvalue()


def publish(store: ProjectionStore, s3, bucket: str, prefix: str, model: Published, *, trained_at: datetime,
            watermark: dict[int, int], metrics: dict) -> ModelInfo:
    """Write the model's rows and artefacts a chunk at a time, then its manifest, then make it current."""
    version = new_version(trained_at)
    folder = f"{prefix}{version}/"
    info = ModelInfo(version=version, trained_at=trained_at, watermark=watermark, metrics=metrics,
                     params=model.params, mu=model.mu, rank=model.rank, artefacts=f"s3://{bucket}/{folder}")
    for kind in KINDS:
        for part, (ids, biases, vectors, counts) in enumerate(model.chunks(kind, BATCH)):
            if kind in ARCHIVED:
                s3.put_object(Bucket=bucket, Key=f"{folder}{kind}-{part:05d}.npz",
                              Body=_part(ids, biases, vectors, counts), ContentType="application/octet-stream")
            store.put_factors(version, kind, _rows(ids, biases, vectors, counts))
    s3.put_object(Bucket=bucket, Key=folder + "manifest.json", Body=msgspec.json.encode(info),
                  ContentType="application/json")
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
    """The version's S3 artefacts, as published (its parts of each kind, in order): the movies'
    factors; no user's (those are in the store only)."""
    bucket, _, folder = info.artefacts.removeprefix("s3://").partition("/")
    keys = sorted(item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
                  for item in page.get("Contents", ()))
    parts: dict[str, list] = {kind: [] for kind in KINDS}
    for key in keys:
        kind = key[len(folder):].partition("-")[0]
        if kind in parts and key.endswith(".npz"):
            with np.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), allow_pickle=False) as part:
                parts[kind].append({name: part[name] for name in part.files})

    def joined(kind: str, name: str) -> np.ndarray:
        return np.concatenate([part[name] for part in parts[kind]]) if parts[kind] else np.array([])

    item_ids = joined("item", "ids")
    taste = pd.Index(joined("taste", "ids")).get_indexer(item_ids)  # the taste rows in the items' order
    def vectors(kind: str, rank: int) -> np.ndarray:
        return joined(kind, "vectors").reshape(-1, rank)

    return FactorModel(info.mu, joined("user", "ids"), item_ids, joined("user", "biases"), joined("item", "biases"),
                       vectors("user", info.rank), vectors("item", info.rank), joined("item", "counts"),
                       vectors("taste", taste_rank(info))[taste], dict(info.params))


def retain(store: ProjectionStore, s3, bucket: str, prefix: str, keep: int) -> list[str]:
    """Delete every published version but the newest `keep` and the current one (which may be older:
    runs publish in the order they finish), and what publications that died left under
    ``<prefix>`` more than ORPHAN_AGE ago. Answer the versions deleted, newest first."""
    if keep < 1:
        raise ValueError(f"keep at least one version, not {keep}")
    # S3 before the registry: a version published in between is in the registry as read.
    folders = _version_folders(s3, bucket, prefix)
    current, published = store.model(), store.models()
    kept = {info.version for info in published[:keep]} | ({current.version} if current else set())
    deleted = []
    for info in published:
        if info.version not in kept and store.drop_model(info.version):
            where, _, folder = info.artefacts.removeprefix("s3://").partition("/")
            if folder.endswith(f"{info.version}/"):  # its own folder only, whatever a row names
                _delete_folder(s3, where, folder)
            deleted.append(info.version)
    now = datetime.now(timezone.utc)
    for version in set(folders) - {info.version for info in published}:
        written = [item["LastModified"] for item in _objects(s3, bucket, folders[version])]
        if written and now - max(written) > ORPHAN_AGE and store.drop_model(version):
            _delete_folder(s3, bucket, folders[version])
            deleted.append(version)
    return sorted(deleted, reverse=True)


def _version_folders(s3, bucket: str, prefix: str) -> dict[str, str]:
    """version -> its folder, for the folders under `prefix` named like versions (a shared prefix
    may hold other things)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    folders = (common["Prefix"] for page in pages for common in page.get("CommonPrefixes", ()))
    return {folder[len(prefix):-1]: folder for folder in folders if VERSION.fullmatch(folder[len(prefix):-1])}


def _objects(s3, bucket: str, folder: str) -> list[dict]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
    return [item for page in pages for item in page.get("Contents", ())]


def _delete_folder(s3, bucket: str, folder: str) -> None:
    s3.delete_object(Bucket=bucket, Key=folder + "manifest.json")  # first: a folder with one is complete
    for item in _objects(s3, bucket, folder):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
