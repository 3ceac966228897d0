"""Static files under content-hashed URLs, so browsers may keep them for a year: a changed file
gets a new URL."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.datastructures import QueryParams
from starlette.staticfiles import StaticFiles

FOLDER = Path(__file__).parent / "static"  # flat: a file's name is its path
FOREVER = "public, max-age=31536000, immutable"


@cache
def digest(name: str) -> str:
    return hashlib.sha256((FOLDER / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"/static/{name}?v={digest(name)}"


class CachedStatic(StaticFiles):
    """Answers a file with `Cache-Control` for a year when asked by its current hashed URL, and
    for revalidation (its ETag) otherwise."""

    def file_response(self, full_path, stat_result, scope, status_code=200):
        response = super().file_response(full_path, stat_result, scope, status_code)
        current = QueryParams(scope["query_string"]).get("v") == digest(Path(full_path).name)
        response.headers["Cache-Control"] = FOREVER if current else "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
