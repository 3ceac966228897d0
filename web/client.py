"""The site's way to the API: HTTP calls to the same app, in process, so that the pages use nothing
but what the API offers (its validation and problems, its read-your-writes tokens, its accounts).
The calls come from the browser's address, as the API sees it, and carry the signed-in visitor's
access token."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
from starlette.requests import Request


def segment(value: str) -> str:
    """`value` as one path segment."""
    return quote(value, safe="")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    headers: httpx.Headers = field(default_factory=httpx.Headers)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        """A problem's explanation (RFC 9457 `detail`)."""
        return self.body.get("detail") or self.body.get("title") or f"the service answered {self.status}"

    def field_errors(self) -> dict[str, str]:
        """A 422's problems by field name."""
        return {error["pointer"].removeprefix("#/"): error["detail"] for error in self.body.get("errors", [])}


class Api:
    """An HTTP client of the app serving `request`; use it in `async with`."""

    def __init__(self, request: Request, token: str | None = None):
        # The browser's address as the server took it from the connection, not ASGITransport's fixed
        # one: the API throttles failed sign-ins per client address. No header the browser sends
        # reaches these calls, so none can name another address.
        client = {"client": (request.client.host, request.client.port)} if request.client else {}
        # A failing endpoint still answers (500 problem) rather than raising into the page.
        transport = httpx.ASGITransport(app=request.app, raise_app_exceptions=False, **client)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers, timeout=30)

    async def __aenter__(self) -> "Api":
        return self

    async def __aexit__(self, *exc) -> None:
        await self._client.aclose()

    async def call(self, method: str, path: str, params: dict | None = None, json: dict | None = None,
                   key: str | None = None) -> Answer:
        headers = {"Idempotency-Key": key} if key else {}
        params = {name: value for name, value in (params or {}).items() if value not in (None, "")}
        response = await self._client.request(method, path, params=params, json=json, headers=headers)
        return Answer(response.status_code, response.json() if response.content else {}, response.headers)

    async def get(self, path: str, **params) -> Answer:
        return await self.call("GET", path, params)
