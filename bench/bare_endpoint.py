"""A bare `POST /v1/reviews` endpoint: the ingest benchmark's HTTP-stack baseline.

    .venv/bin/python -m bench.bare_endpoint --port 8123 [--host 127.0.0.1]

Starlette under uvicorn with the API's options (uvloop, httptools, no access log). It decodes the body into
the API's command type as api/wire.py does and answers 202 with a receipt-shaped body, appending nothing
(a body that does not decode: 422). GET /readyz answers 200.
"""

from __future__ import annotations

import argparse
import itertools

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from commands.types import Receipt, SubmitReview
from events.position import Position


def create_app() -> Starlette:
    counter = itertools.count()
    encode = msgspec.json.encode

    async def submit_review(request: Request) -> Response:
        try:
            msgspec.json.decode(await request.body(), type=SubmitReview)  # the API's decode and validation
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            return Response(encode({"detail": str(error)}), status_code=422, media_type="application/json")
        position = Position(0, next(counter))
        receipt = Receipt(event_id=f"bare-{position.offset}", position=position, token=position.token())
        return Response(encode(receipt), status_code=202, media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/reviews", submit_review, methods=["POST"]),
                             Route("/readyz", ready, methods=["GET"])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_config=None, access_log=False, loop="uvloop",
                http="httptools")


if __name__ == "__main__":
    main()
